"""The figures behind docs/scaling.md's capacity model, measured on this machine.

Three measurements, each on its own redis-server:

- Redis CPU per ``XADD`` of relay's entry, from ``redis-benchmark``, sent one
  at a time and in pipelines of 100;
- the extra Redis CPU per ``XADD`` for each blocked reader of the stream
  (0, 1 and 10 ``redis-cli XREAD BLOCK 0`` loops, re-blocking after every
  answer as a gateway's reader does);
- a gateway's CPU per event read: ``relay.server.ingest.Ingest`` decoding,
  validating and folding 100,000 entries into a session view, in this process;
  and the memory the session view takes per session it remembers.

Redis CPU is ``used_cpu_user + used_cpu_sys`` from ``INFO cpu``, so the load
generators' own CPU (which shares the machine's cores) is not in it.

    python bench/capacity.py
    python bench/capacity.py --requests 200000 --readers 0 1 10 50
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from config import RESULTS_DIR, save_record
from machine import relay_commit
from procs import Proc, rss_kib, spawn, stop_all
from redis_nodes import RedisNodes, running_redis

from relay.protocol.event import ProgressEvent
from relay.protocol.keys import Keys
from relay.server.hub import Hub
from relay.server.ingest import Ingest
from relay.server.session_view import SessionView

STREAM = "workflow:progress:bench"
CLIENTS = 50
READER_WAIT = 10.0
INGEST_SESSIONS = 1_000
DAY_MS = 86_400_000


def sample_fields() -> dict[str, str]:
    """The ~200-byte entry relay writes for one progress report."""
    event = ProgressEvent(
        session_id="bench-1",
        workflow_type="bench",
        step="analyzing",
        progress=45.5,
        metadata={"run": 0, "seq": 0, "details": "analyzing land cover: forests, rivers, roads"},
    )
    return event.stream_fields(int(time.time() * 1000))


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not on PATH")
    return found


async def xadd_cost(nodes: RedisNodes, log_dir: Path, requests: int, pipeline: int) -> float:
    """Redis CPU µs per XADD of ``requests`` sent by redis-benchmark, ``pipeline`` at a time."""
    command = ["XADD", STREAM, "MAXLEN", "~", "10000", "*"]
    command += [item for pair in sample_fields().items() for item in pair]
    argv = [_tool("redis-benchmark"), "-p", str(nodes.ports[0]), "-c", str(CLIENTS)]
    argv += ["-n", str(requests), "-P", str(pipeline), "-q", *command]
    before = sum((await nodes.cpu_seconds()).values())
    bench = await spawn(f"benchmark-P{pipeline}", argv, log_dir)
    try:
        code = await bench.wait(600)
    finally:
        await bench.stop()
    if code != 0:
        raise RuntimeError(f"redis-benchmark failed ({code}); see {bench.log}")
    used = sum((await nodes.cpu_seconds()).values()) - before
    return used * 1e6 / requests


async def _blocked(nodes: RedisNodes, count: int) -> bool:
    """Whether ``count`` clients are blocked right now."""
    client = nodes.client()
    try:
        info = await client.info("clients")
    finally:
        await client.aclose()
    return int(info["blocked_clients"]) >= count


async def blocked_reader_cost(
    nodes: RedisNodes, log_dir: Path, readers: int, requests: int
) -> tuple[float, float]:
    """Redis CPU µs per unpipelined XADD while ``readers`` clients block on the stream.

    Also the XREADs answered per XADD: a reader that is woken takes every entry
    added since, so at a high rate it is woken for several at once.
    """
    cli = _tool("redis-cli")
    started: list[Proc] = []
    try:
        for n in range(readers):
            argv = [cli, "-p", str(nodes.ports[0]), "-r", "-1", "XREAD", "BLOCK", "0"]
            argv += ["STREAMS", STREAM, "$"]
            started.append(await spawn(f"reader{readers}-{n}", argv, log_dir, quiet=True))
        deadline = time.monotonic() + READER_WAIT
        while not await _blocked(nodes, readers):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{readers} readers did not block within {READER_WAIT:.0f}s")
            await asyncio.sleep(0.05)
        await nodes.reset_stats()
        us = await xadd_cost(nodes, log_dir, requests, 1)
        client = nodes.client()
        try:
            stats = await client.info("commandstats")
        finally:
            await client.aclose()
        reads = int(stats.get("cmdstat_xread", {}).get("calls", 0))
        return us, reads / requests
    finally:
        await stop_all(started)


def _entries(count: int, sessions: int) -> list[tuple[str, dict[str, str]]]:
    """``count`` entries of relay's shape, each a new report of one of ``sessions`` sessions."""
    template = sample_fields()
    ms = int(template["ts"])
    return [
        (
            f"{ms + n}-0",
            {
                **template,
                "session_id": f"bench-{n % sessions}",
                "progress": str(n * 100 // count),
                "ts": str(ms + n),
            },
        )
        for n in range(count)
    ]


def _ingest(entries: list[tuple[str, dict[str, str]]], max_sessions: int) -> SessionView:
    keys = Keys()
    view = SessionView(ttl_ms=DAY_MS, max_sessions=max_sessions)
    ingest = Ingest(keys, Hub(), view)
    for start in range(0, len(entries), 1_000):
        ingest(keys.stream("bench"), entries[start : start + 1_000], True)
    if ingest.invalid:
        raise RuntimeError(f"{ingest.invalid} of the sample entries were refused")
    return view


def ingest_cost(count: int) -> float:
    """A gateway's CPU µs per entry to decode, validate and fold ``count`` entries into its view.

    The entries are reports of 1,000 sessions, none a heartbeat, so every one
    would be routed; no subscriber is connected, so nothing is sent.
    """
    entries = _entries(count, INGEST_SESSIONS)
    began = time.process_time()
    _ingest(entries, 20_000)
    return (time.process_time() - began) * 1e6 / count


def session_memory(sessions: int) -> float:
    """KiB of this process's RSS per session the view remembers (one event each)."""
    entries = _entries(sessions, sessions)
    gc.collect()
    before = rss_kib(os.getpid())
    view = _ingest(entries, sessions)
    gc.collect()
    grown = rss_kib(os.getpid()) - before
    del view
    return grown / sessions


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000, help="XADDs a measurement")
    parser.add_argument("--readers", type=int, nargs="+", default=[0, 1, 10])
    parser.add_argument("--entries", type=int, default=100_000, help="entries ingested")
    parser.add_argument("--sessions", type=int, default=100_000, help="sessions remembered")
    args = parser.parse_args(argv)
    stamp = datetime.now(UTC).strftime("capacity-%Y%m%dT%H%M%SZ")
    log_dir = RESULTS_DIR / "logs" / stamp
    log_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, object] = {"commit": relay_commit(), "requests": args.requests}
    print(f"relay {relay_commit()}\n\n| figure | value |\n|---|---|")
    async with running_redis(log_dir, "capacity", cluster=False) as nodes:
        for pipeline in (1, 100):
            us = await xadd_cost(nodes, log_dir, args.requests, pipeline)
            record[f"xadd_P{pipeline}_redis_cpu_us"] = round(us, 2)
            print(f"| XADD, pipeline {pipeline}: Redis CPU µs / event | {us:.2f} |", flush=True)
        readers: dict[str, dict[str, float]] = {}
        for count in args.readers:
            us, reads = await blocked_reader_cost(nodes, log_dir, count, args.requests)
            readers[str(count)] = {"redis_cpu_us": round(us, 2), "xreads_per_xadd": round(reads, 3)}
            print(
                f"| XADD with {count} blocked readers: Redis CPU µs / event "
                f"(XREADs answered / XADD) | {us:.2f} ({reads:.2f}) |",
                flush=True,
            )
        record["xadd_with_blocked_readers_redis_cpu_us"] = readers
    us = ingest_cost(args.entries)
    record["ingest_cpu_us_per_entry"] = round(us, 2)
    print(f"| gateway ingest (decode, validate, session view): CPU µs / entry | {us:.2f} |")
    kib = session_memory(args.sessions)
    record["session_view_kib_per_session"] = round(kib, 2)
    print(f"| session view, {args.sessions:,} sessions: gateway KiB / session | {kib:.2f} |")
    out = save_record(stamp, record)
    print(f"\nrecord: {out}\nlogs: {log_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))

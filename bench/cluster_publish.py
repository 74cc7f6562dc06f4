"""Publish throughput over many workflow types: one Redis against a 3-shard cluster.

N publisher processes each write events round-robin over ``--types`` type
streams for a fixed time, in one of three ways:

- ``raw``: one unpipelined ``XADD`` per event, what a plain worker does;
- ``pipelined``: ``XADD``s sent ``--batch`` at a time in one pipeline (on a
  cluster the client splits it by node);
- ``relay``: relay's own publisher, ``StreamPublisher``, with ``--batch``
  events per ``publish()`` call and ``--tasks`` concurrent calls a process.

The entries carry the fields relay writes (``ProgressEvent.stream_fields``),
and every stream is trimmed to ``MAXLEN ~ 10000`` as relay's default does.
Reported: events/s, Redis CPU (``INFO cpu`` of every node) per event, and for
each shard its primary's CPU a second and per event it stored, so the figure
for one core per shard can be read off on a machine with fewer cores than
shards. The CPU of processes the bench did not start is reported too: a
large figure means something else shared the cores. A mode this relay cannot
run on a store is reported as such, with the error, never as a figure.

    python bench/cluster_publish.py                       # 1 and 3 shards, every mode
    python bench/cluster_publish.py --shards 3 --modes raw,pipelined --publishers 4
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as EventType
from typing import Any

import redis
from config import RESULTS_DIR, save_record
from machine import relay_commit
from meters import foreign_cpu, machine_cpu_ms, process_table
from redis.cluster import RedisCluster
from redis_nodes import RedisNodes, running_redis

from relay.protocol.event import ProgressEvent

MODES = ("raw", "pipelined", "relay")
MAXLEN = 10_000
START_WITHIN = 30.0
DETAILS = "analyzing land cover: forests, rivers, roads"


@dataclass(frozen=True)
class Job:
    """What one publisher process does."""

    mode: str
    url: str
    cluster: bool
    port: int
    types: list[str]
    seconds: float
    batch: int
    tasks: int
    index: int


@dataclass
class Outcome:
    """What one publisher process did."""

    events: int = 0
    per_type: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    first_error: str | None = None
    cpu_ms: float = 0.0
    cpu_at_start_ms: float = 0.0

    def start(self, ready: Queue[int], go: EventType) -> None:
        """Say it is ready, wait for the common start; CPU from here on is the publishing's."""
        ready.put(0)
        go.wait(START_WITHIN)
        self.cpu_at_start_ms = time.process_time() * 1000


def stream_key(workflow_type: str) -> str:
    """The type stream relay reads, with no key prefix."""
    return f"workflow:progress:{workflow_type}"


def events_for(job: Job) -> list[ProgressEvent]:
    """One event per type, the same ~200-byte report the rest of the bench sends."""
    return [
        ProgressEvent(
            session_id=f"bench-{job.index}",
            workflow_type=workflow_type,
            step="analyzing",
            progress=45.5,
            metadata={"run": 0, "seq": 0, "session": job.index, "details": DETAILS},
        )
        for workflow_type in job.types
    ]


def _sync_client(job: Job) -> redis.Redis | RedisCluster:
    if job.cluster:
        return RedisCluster(host="127.0.0.1", port=job.port)
    return redis.Redis(port=job.port)


def _publish_raw(job: Job, outcome: Outcome, ready: Queue[int], go: EventType) -> None:
    client = _sync_client(job)
    entries = [(stream_key(e.workflow_type), e.stream_fields(0)) for e in events_for(job)]
    outcome.start(ready, go)
    deadline = time.monotonic() + job.seconds
    n = 0
    try:
        while time.monotonic() < deadline:
            if job.mode == "raw":
                key, fields = entries[n % len(entries)]
                client.xadd(key, fields, maxlen=MAXLEN, approximate=True)
                n += 1
                continue
            pipe = client.pipeline(transaction=False)
            for k in range(n, n + job.batch):
                key, fields = entries[k % len(entries)]
                pipe.xadd(key, fields, maxlen=MAXLEN, approximate=True)
            pipe.execute()
            n += job.batch
    finally:
        client.close()
    _count(outcome, job, n)


def _count(outcome: Outcome, job: Job, n: int) -> None:
    """Events written, and how many of them went to each type (round-robin)."""
    outcome.events += n
    for k, workflow_type in enumerate(job.types):
        share = n // len(job.types) + (1 if k < n % len(job.types) else 0)
        outcome.per_type[workflow_type] = outcome.per_type.get(workflow_type, 0) + share


async def _publish_relay(job: Job, outcome: Outcome, ready: Queue[int], go: EventType) -> None:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

    from relay.client.stream_publisher import StreamPublisher
    from relay.protocol.keys import Keys

    client: Any = (
        AsyncRedisCluster(host="127.0.0.1", port=job.port) if job.cluster else Redis(port=job.port)
    )
    publisher = StreamPublisher(client, Keys(), maxlen=MAXLEN)
    events = events_for(job)
    batches = [
        [events[(start + k) % len(events)] for k in range(job.batch)]
        for start in range(0, len(events) * job.batch, job.batch)
    ]
    await asyncio.to_thread(outcome.start, ready, go)
    deadline = time.monotonic() + job.seconds

    async def task(offset: int) -> None:
        n = offset
        while time.monotonic() < deadline:
            batch = batches[n % len(batches)]
            try:
                await publisher.publish(batch)
            except Exception as exc:
                outcome.errors += 1
                outcome.first_error = outcome.first_error or f"{type(exc).__name__}: {exc}"[:300]
                return
            for event in batch:
                outcome.per_type[event.workflow_type] = (
                    outcome.per_type.get(event.workflow_type, 0) + 1
                )
            outcome.events += len(batch)
            n += 1

    try:
        await asyncio.gather(*(task(t) for t in range(job.tasks)))
    finally:
        await client.aclose()


def publisher_main(job: Job, ready: Queue[int], go: EventType, results: Queue[Outcome]) -> None:
    """One publisher process: publish until the time is up, put what it did on ``results``."""
    outcome = Outcome()
    try:
        if job.mode == "relay":
            asyncio.run(_publish_relay(job, outcome, ready, go))
        else:
            _publish_raw(job, outcome, ready, go)
    except Exception as exc:
        outcome.errors += 1
        outcome.first_error = outcome.first_error or f"{type(exc).__name__}: {exc}"[:300]
    outcome.cpu_ms = time.process_time() * 1000 - outcome.cpu_at_start_ms
    results.put(outcome)


@dataclass(frozen=True)
class Run:
    """One mode on one store: the figures, or why there are none."""

    shards: int
    mode: str
    publishers: int
    events: int = 0
    seconds: float = 0.0
    events_per_s: float = 0.0
    redis_cpu_us_per_event: float | None = None
    primaries_cpu_ms_per_s: float = 0.0
    replicas_cpu_ms_per_s: float = 0.0
    publishers_cpu_ms_per_s: float = 0.0
    machine_busy_pct: float = 0.0
    # CPU ms of processes this bench did not start (a disturbed run shows here).
    others_cpu_ms: dict[str, float] = field(default_factory=dict)
    # Per primary port: its CPU ms a second, the events it stored, CPU µs per event.
    per_shard: dict[str, dict[str, float]] = field(default_factory=dict)
    error: str | None = None


async def run_mode(nodes: RedisNodes, mode: str, args: argparse.Namespace) -> Run:
    """Run ``args.publishers`` processes of ``mode`` at once and measure them."""
    await nodes.flush()
    types = [f"bench{n}" for n in range(args.types)]
    primaries = await nodes.primary_ports()
    shard_of_key = await nodes.shard_of([stream_key(t) for t in types])
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    ready: Queue[int] = context.Queue()
    results: Queue[Outcome] = context.Queue()
    procs = []
    for index in range(args.publishers):
        job = Job(
            mode,
            nodes.url,
            nodes.cluster,
            nodes.ports[0],
            types,
            args.seconds,
            args.batch,
            args.tasks,
            index,
        )
        procs.append(context.Process(target=publisher_main, args=(job, ready, go, results)))
    for proc in procs:
        proc.start()
    try:
        # Each process connects and builds its events before the common start.
        for _ in procs:
            await asyncio.to_thread(ready.get, True, START_WITHIN)
        cpu_before = await nodes.cpu_seconds()
        machine_before = machine_cpu_ms()
        table_before = process_table()
        began = time.monotonic()
        go.set()
        outcomes = [
            await asyncio.to_thread(results.get, True, args.seconds + START_WITHIN) for _ in procs
        ]
        elapsed = time.monotonic() - began
        cpu_after = await nodes.cpu_seconds()
        machine_after = machine_cpu_ms()
        others = foreign_cpu(table_before, process_table())
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    shards = len(primaries)
    failed = [o.first_error for o in outcomes if o.first_error]
    events = sum(o.events for o in outcomes)
    if failed and not events:
        return Run(shards, mode, args.publishers, error=failed[0])
    used = {port: (cpu_after[port] - cpu_before[port]) * 1000 for port in nodes.ports}
    stored: dict[int, int] = dict.fromkeys(primaries, 0)
    for outcome in outcomes:
        for workflow_type, count in outcome.per_type.items():
            stored[shard_of_key[stream_key(workflow_type)]] += count
    primaries_ms = sum(used[p] for p in primaries)
    per_shard = {
        str(port): {
            "cpu_ms_per_s": round(used[port] / elapsed, 1),
            "events": stored[port],
            "cpu_us_per_event": round(used[port] * 1000 / stored[port], 2) if stored[port] else 0,
        }
        for port in primaries
    }
    busy = machine_after[0] - machine_before[0]
    total = machine_after[1] - machine_before[1]
    return Run(
        shards,
        mode,
        args.publishers,
        events=events,
        seconds=round(elapsed, 2),
        events_per_s=round(events / elapsed),
        redis_cpu_us_per_event=round(primaries_ms * 1000 / events, 2) if events else None,
        primaries_cpu_ms_per_s=round(primaries_ms / elapsed, 1),
        replicas_cpu_ms_per_s=round((sum(used.values()) - primaries_ms) / elapsed, 1),
        publishers_cpu_ms_per_s=round(sum(o.cpu_ms for o in outcomes) / elapsed, 1),
        machine_busy_pct=round(100 * busy / total, 1) if total else 0.0,
        others_cpu_ms=others,
        per_shard=per_shard,
        error=f"{len(failed)} publisher(s) failed: {failed[0]}" if failed else None,
    )


def row(run: Run) -> str:
    """One markdown table row."""
    if run.events == 0:
        return (
            f"| {run.shards} | {run.mode} | {run.publishers} | not supported by this relay "
            f"version: {run.error} | | | | | |"
        )
    shards = "; ".join(
        f"{s['cpu_ms_per_s']:.0f} ms/s, {s['cpu_us_per_event']:.1f} µs/ev"
        for s in run.per_shard.values()
    )
    note = f" ({run.error})" if run.error else ""
    return (
        f"| {run.shards} | {run.mode} | {run.publishers} | {run.events_per_s:,.0f}{note} "
        f"| {run.redis_cpu_us_per_event:.2f} | {shards} | {run.publishers_cpu_ms_per_s:.0f} "
        f"| {run.machine_busy_pct:.0f} % | {sum(run.others_cpu_ms.values()) / run.seconds:.0f} |"
    )


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, nargs="+", choices=(1, 3), default=[1, 3])
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated, of MODES")
    parser.add_argument("--publishers", type=int, default=3, help="publisher processes")
    parser.add_argument("--types", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--batch", type=int, default=100, help="events per pipeline or publish")
    parser.add_argument("--tasks", type=int, default=4, help="concurrent publish() calls (relay)")
    args = parser.parse_args(argv)
    modes = args.modes.split(",")
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes: {', '.join(sorted(unknown))}")
    stamp = datetime.now(UTC).strftime("cluster-publish-%Y%m%dT%H%M%SZ")
    log_dir = RESULTS_DIR / "logs" / stamp
    log_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"relay {relay_commit()}, {args.types} types, {args.publishers} publisher processes, "
        f"batch {args.batch}, {args.seconds:.0f} s a mode\n"
    )
    print(
        "| shards | mode | publishers | events/s | Redis CPU µs/event (primaries) "
        "| per shard: CPU, CPU per event | publishers CPU ms/s | machine busy "
        "| other processes CPU ms/s |\n|---|---|---|---|---|---|---|---|---|"
    )
    runs: list[Run] = []
    for shards in args.shards:
        async with running_redis(log_dir, f"publish{shards}", cluster=shards > 1) as nodes:
            for mode in modes:
                run = await run_mode(nodes, mode, args)
                runs.append(run)
                print(row(run), flush=True)
    record = {"commit": relay_commit(), "args": vars(args), "runs": [asdict(r) for r in runs]}
    out = save_record(stamp, record)
    print(f"\nrecord: {out}\nlogs: {log_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))

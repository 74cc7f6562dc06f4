"""What an idle gateway costs: Redis commands and CPU a second while nothing is published.

Starts its own Redis (one redis-server, or with ``--cluster`` three primaries
with a replica each), fills it with one small stream per workflow type by raw
``XADD``, starts one ``relay serve`` on it, waits until it is ready, then
counts over an idle interval every command Redis runs (``INFO commandstats``),
Redis's CPU (``INFO cpu``, every node) and the gateway's own CPU
(``/proc/<pid>/stat``). None of the figures should depend on the number of
types.

    python bench/idle_ops.py                        # 10 and 10,000 types
    python bench/idle_ops.py --types 10 100000 --seconds 20
    python bench/idle_ops.py --cluster              # on a 3-primary cluster
    python bench/idle_ops.py --relay-source /tmp/before   # another checkout's gateway

With ``--relay-source DIR`` the gateway is ``python -m relay serve`` run from
``DIR`` with ``PYTHONPATH=DIR``, to measure another commit (a ``git worktree``
of it) on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from config import REPO_DIR, RESULTS_DIR, save_record
from machine import relay_commit
from procs import free_port, spawn, stop_all, wait_http_ok
from redis.typing import EncodableT, FieldT
from redis_nodes import RedisNodes, running_redis
from systems import _relay_argv

FILL_CHUNK = 1_000
SETTLE_SECONDS = 2.0
READY_WITHIN = 300.0


@dataclass(frozen=True)
class IdleFigures:
    """One idle interval: commands, Redis CPU and gateway CPU, each per second."""

    types: int
    commands_per_s: float
    redis_cpu_ms_per_s: float
    gateway_cpu_ms_per_s: float


async def fill(nodes: RedisNodes, types: int) -> None:
    """One entry in each of ``types`` type streams, by raw pipelined XADD."""
    client = nodes.client()
    entry: dict[FieldT, EncodableT] = {"session_id": "s1", "step": "idle", "progress": "1"}
    try:
        for start in range(0, types, FILL_CHUNK):
            # On a cluster the client splits the pipeline by node.
            async with client.pipeline(transaction=False) as pipe:
                for n in range(start, min(start + FILL_CHUNK, types)):
                    pipe.xadd(f"workflow:progress:idle{n}", entry)
                await pipe.execute()
    finally:
        await client.aclose()


async def measure(
    log_dir: Path, types: int, seconds: float, *, cluster: bool, source: Path | None
) -> IdleFigures:
    """The figures of one ready, idle gateway following ``types`` streams.

    Raises ``RuntimeError`` when the gateway does not start on this Redis.
    """
    tag = f"idle{types}{'-cluster' if cluster else ''}"
    async with running_redis(log_dir, tag, cluster=cluster) as nodes:
        await fill(nodes, types)
        port = free_port()
        argv = [*_relay_argv(port, nodes.url), "--log-level", "warning"]
        # This checkout's relay unless told otherwise, whatever relay is installed.
        tree = source or REPO_DIR
        env = {"PYTHONPATH": str(tree)}
        gateway = await spawn(f"{tag}-relay", argv, log_dir, cwd=tree, env=env)
        try:
            await wait_http_ok(f"http://127.0.0.1:{port}/readyz", gateway, within=READY_WITHIN)
            # Past the history read at start and the first lag measurements.
            await asyncio.sleep(SETTLE_SECONDS)
            redis_before = sum((await nodes.cpu_seconds()).values())
            await nodes.reset_stats()
            gateway_before = gateway.cpu_ms()
            began = time.monotonic()
            await asyncio.sleep(seconds)
            elapsed = time.monotonic() - began
            gateway_ms = gateway.cpu_ms() - gateway_before
            calls = await nodes.command_calls()
            redis_ms = (sum((await nodes.cpu_seconds()).values()) - redis_before) * 1000
        finally:
            await stop_all([gateway])
    return IdleFigures(types, calls / elapsed, redis_ms / elapsed, gateway_ms / elapsed)


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", type=int, nargs="+", default=[10, 10_000])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--cluster", action="store_true", help="a 3-primary Redis Cluster")
    parser.add_argument("--relay-source", type=Path, help="run the gateway from this checkout")
    args = parser.parse_args(argv)
    source = args.relay_source.resolve() if args.relay_source else None
    stamp = datetime.now(UTC).strftime("idle-%Y%m%dT%H%M%SZ")
    log_dir = RESULTS_DIR / "logs" / stamp
    log_dir.mkdir(parents=True, exist_ok=True)
    store = "3-primary cluster" if args.cluster else "single Redis"
    commit = relay_commit(source) if source else relay_commit()
    print(f"relay {commit} on {store}\n")
    print("| types | Redis commands/s | Redis CPU ms/s | gateway CPU ms/s |\n|---|---|---|---|")
    rows: list[dict[str, object]] = []
    for types in args.types:
        try:
            figures = await measure(
                log_dir, types, args.seconds, cluster=args.cluster, source=source
            )
        except RuntimeError as exc:
            print(f"| {types:,} | not supported by this relay version ({exc}) | | |", flush=True)
            rows.append({"types": types, "error": str(exc)})
            continue
        print(
            f"| {types:,} | {figures.commands_per_s:.1f} | {figures.redis_cpu_ms_per_s:.2f} "
            f"| {figures.gateway_cpu_ms_per_s:.2f} |",
            flush=True,
        )
        rows.append(asdict(figures))
    record = {"commit": commit, "cluster": args.cluster, "seconds": args.seconds, "rows": rows}
    out = save_record(stamp, record)
    print(f"\nrecord: {out}\nlogs: {log_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))

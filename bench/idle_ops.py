"""What an idle gateway costs Redis: commands a second while nothing is published.

Starts its own redis-server, fills it with one small stream per workflow type,
starts one ``relay serve`` on it, waits until it is ready, then counts every
command Redis runs (``INFO commandstats``) over an idle interval. The figure
should not depend on the number of types.

    python bench/idle_ops.py                        # 10 and 10,000 types
    python bench/idle_ops.py --types 10 100000 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime
from typing import Any

import redis.asyncio
from config import RESULTS_DIR, Config
from procs import free_port, spawn, stop_all, wait_http_ok
from systems import _relay_argv, _start_redis

FILL_CHUNK = 1_000
SETTLE_SECONDS = 2.0
READY_WITHIN = 300.0


async def fill(url: str, types: int) -> None:
    """One entry in each of ``types`` type streams."""
    client = redis.asyncio.Redis.from_url(url)
    entry = {"session_id": "s1", "step": "idle", "progress": "1"}
    try:
        for start in range(0, types, FILL_CHUNK):
            async with client.pipeline(transaction=False) as pipe:
                for n in range(start, min(start + FILL_CHUNK, types)):
                    pipe.xadd(f"workflow:progress:idle{n}", entry)
                await pipe.execute()
    finally:
        await client.aclose()


async def idle_ops_per_second(cfg: Config, types: int, seconds: float) -> float:
    """Redis commands a second of one ready, idle gateway following ``types`` streams."""
    redis_proc, url = await _start_redis(cfg, f"idle{types}")
    started = [redis_proc]
    try:
        await fill(url, types)
        port = free_port()
        argv = [*_relay_argv(port, url), "--log-level", "warning"]
        gateway = await spawn(f"idle{types}-relay", argv, cfg.log_dir)
        started.append(gateway)
        await wait_http_ok(f"http://127.0.0.1:{port}/readyz", gateway, within=READY_WITHIN)
        # Past the history read at start and the first lag measurements.
        await asyncio.sleep(SETTLE_SECONDS)
        client = redis.asyncio.Redis.from_url(url, decode_responses=True)
        try:
            await client.config_resetstat()
            began = time.monotonic()
            await asyncio.sleep(seconds)
            stats: dict[str, Any] = await client.info("commandstats")
            elapsed = time.monotonic() - began
        finally:
            await client.aclose()
    finally:
        await stop_all(started)
    calls = sum(
        int(stat["calls"]) for name, stat in stats.items() if not name.startswith("cmdstat_config")
    )
    return calls / elapsed


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", type=int, nargs="+", default=[10, 10_000])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    stamp = datetime.now(UTC).strftime("idle-%Y%m%dT%H%M%SZ")
    log_dir = RESULTS_DIR / "logs" / stamp
    log_dir.mkdir(parents=True, exist_ok=True)
    cfg = Config.make(quick=True, log_dir=log_dir)
    print("| types | idle Redis commands/s |\n|---|---|")
    for types in args.types:
        rate = await idle_ops_per_second(cfg, types, args.seconds)
        print(f"| {types:,} | {rate:.1f} |", flush=True)
    print(f"logs: {log_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))

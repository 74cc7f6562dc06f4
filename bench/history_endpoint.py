"""CPU per request of a session's history when its type's stream is long.

    python bench/history_endpoint.py [--entries 300000] [--requests 200]

Starts Redis and relay (as the suite does), fills one type stream with
``--entries`` entries of other sessions plus a few of one session, waits until
the gateways have read them, then asks gateway A for that session's history
``--requests`` times in a row and prints the gateway's and Redis's CPU time per
request (``utime + stime`` from ``/proc``) and the latency.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import redis.asyncio
from config import WORKFLOW_TYPE, Config
from systems import deploy

SESSION = "history-bench"
SESSION_EVENTS = 50
FILL_CHUNK = 10_000
READ_TIMEOUT = 300.0


async def fill(redis_url: str, entries: int) -> str:
    """``entries`` entries of 1,000 other sessions with the bench session's spread among them.

    Answers the step of the bench session's last event.
    """
    stream = f"workflow:progress:{WORKFLOW_TYPE}"
    every = max(entries // SESSION_EVENTS, 1)
    start_ms = int(time.time() * 1000) - entries
    step = ""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        for first in range(0, entries, FILL_CHUNK):
            async with client.pipeline(transaction=False) as pipe:
                for n in range(first, min(first + FILL_CHUNK, entries)):
                    fields = {"session_id": f"other-{n % 1000}", "step": "s", "progress": "1"}
                    pipe.xadd(stream, fields, id=f"{start_ms + n}-0")
                    if n % every == 0:
                        step = f"step-{n // every}"
                        mine = {"session_id": SESSION, "step": step, "progress": "50"}
                        pipe.xadd(stream, mine, id=f"{start_ms + n}-1")
                await pipe.execute()
    finally:
        await client.aclose()
    return step


async def wait_for_step(http: aiohttp.ClientSession, base: str, step: str) -> None:
    deadline = time.monotonic() + READ_TIMEOUT
    url = f"{base}/api/workflows/sessions/{SESSION}"
    while time.monotonic() < deadline:
        async with http.get(url) as response:
            if response.status == 200 and (await response.json())["step"] == step:
                return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the gateway had not read the stream after {READ_TIMEOUT:.0f}s")


async def main(entries: int, requests: int) -> None:
    with tempfile.TemporaryDirectory(prefix="relay-history-bench-") as folder:
        cfg = Config.make(quick=True, log_dir=Path(folder))
        async with deploy("relay", cfg, "history") as deployment, aiohttp.ClientSession() as http:
            gateway = deployment.instances[0]
            assert deployment.redis_proc is not None
            step = await fill(deployment.redis_url, entries)
            await wait_for_step(http, gateway.base_url, step)
            url = f"{gateway.base_url}/api/workflows/sessions/{SESSION}/events"
            served: list[int] = []
            latencies: list[float] = []
            gateway_before = gateway.proc.cpu_ms()
            redis_before = deployment.redis_proc.cpu_ms()
            for _ in range(requests):
                sent = time.perf_counter()
                async with http.get(url, params={"limit": "1000"}) as response:
                    served.append(len(await response.json()))
                latencies.append((time.perf_counter() - sent) * 1000)
            gateway_ms = (gateway.proc.cpu_ms() - gateway_before) / requests
            redis_ms = (deployment.redis_proc.cpu_ms() - redis_before) / requests
    print(f"stream: {entries:,} entries; the session has {max(served)} events in its history")
    print(f"requests: {requests}, one at a time")
    print(f"gateway CPU per request: {gateway_ms:.2f} ms")
    print(f"redis CPU per request:   {redis_ms:.2f} ms")
    print(f"latency: p50 {statistics.median(latencies):.2f} ms, max {max(latencies):.2f} ms")


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=300_000, help="entries in the stream")
    parser.add_argument("--requests", type=int, default=200, help="history requests to time")
    return parser.parse_args()


if __name__ == "__main__":
    args = _parse()
    asyncio.run(main(args.entries, args.requests))

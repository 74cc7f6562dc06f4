"""W4's direct publisher: many concurrent ``AsyncReporter.report()`` calls for a fixed time.

Prints one JSON line: events written, errors, and the elapsed seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import uvloop

from relay import AsyncReporter

DETAILS = "analyzing land cover: forests, rivers, roads"


async def worker(reporter: AsyncReporter, index: int, sessions: int, deadline: float) -> int:
    """Report until the deadline; the number of events written."""
    written = 0
    while time.monotonic() < deadline:
        metadata = {"run": 0, "seq": written, "session": index % sessions, "details": DETAILS}
        await reporter.report(f"bench-{index % sessions}", "map", "analyzing", 45.5, metadata)
        written += 1
    return written


async def run(redis_url: str, tasks: int, seconds: float, sessions: int) -> dict[str, object]:
    """Run ``tasks`` workers on one reporter; their totals."""
    reporter = AsyncReporter(redis_url)
    try:
        start = time.monotonic()
        deadline = start + seconds
        results = await asyncio.gather(
            *(worker(reporter, i, sessions, deadline) for i in range(tasks)),
            return_exceptions=True,
        )
        elapsed = time.monotonic() - start
    finally:
        await reporter.aclose()
    errors = [r for r in results if isinstance(r, BaseException)]
    events = sum(r for r in results if isinstance(r, int))
    return {
        "type": "done",
        "events": events,
        "errors": len(errors),
        "firstError": repr(errors[0]) if errors else None,
        "seconds": elapsed,
        "eventsPerSecond": events / elapsed,
        "cpuMs": time.process_time() * 1000,
    }


def main() -> None:
    """Parse the arguments, run, print the result line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--tasks", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--sessions", type=int, default=20)
    args = parser.parse_args()
    result = uvloop.run(run(args.redis_url, args.tasks, args.seconds, args.sessions))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

"""Real gateways on one Redis learn the same typical duration, live and rebuilt from the stream."""

from __future__ import annotations

import time
from collections.abc import Callable

import aiohttp

from tests.helpers import Gateway, event, state_when

# No liveness verdicts: the test's sessions are quiet, and their states must stay theirs.
QUIET = {"RELAY_STALL_AFTER": "0"}


async def test_a_session_that_has_not_moved_is_estimated_from_the_typical_duration(
    start_gateway: Callable[..., Gateway], redis_url: str, http: aiohttp.ClientSession
) -> None:
    first = start_gateway(redis_url, **QUIET)
    publish = f"{first.url}/api/workflows/progress"
    now = int(time.time() * 1000)
    start = now - 600_000

    async def post(session_id: str, at: int, **fields: object) -> None:
        body = event(session_id, "forge", ts=at, **fields)
        async with http.post(publish, json=body) as response:
            assert response.status == 202, await response.text()

    # Completed in 10, 20 and 60 s; a failed and a cancelled one, slower, do not count.
    for number, seconds in enumerate((10, 20, 60)):
        await post(f"done-{number}", start, progress=0)
        await post(f"done-{number}", start + seconds * 1000, progress=100, status="completed")
    await post("broke", start, progress=0)
    await post("broke", start + 500_000, status="failed", error="anvil cracked")
    await post("stopped", start, progress=0)
    await post("stopped", start + 400_000, status="cancelled")
    await post("fresh", now, progress=5)

    state = await state_when(http, first.url, "fresh", typical_duration=20.0)
    assert state["estimated_time_remaining"] == 20.0  # the median, nothing elapsed yet
    assert state["status"] == "running"

    # A gateway started now rebuilds the same from the stream's tail.
    second = start_gateway(redis_url, **QUIET)
    rebuilt = await state_when(http, second.url, "fresh", typical_duration=20.0)
    assert rebuilt == state

    # Both follow the session once it moves, by the blended rule.
    await post("fresh", now + 5_000, progress=30)
    moved = await state_when(http, first.url, "fresh", progress=30)
    assert moved["estimated_time_remaining"] not in (None, 20.0)
    again = await state_when(http, second.url, "fresh", progress=30)
    assert again == moved

"""Real gateways on one Redis learn what each step of a plan takes, live and from the stream."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from relay.protocol.progress import estimated_time_remaining
from tests.helpers import Gateway, event, state_when

# No liveness verdicts: the test's sessions are quiet, and their states must stay theirs.
QUIET = {"RELAY_STALL_AFTER": "0"}
PLAN = [{"step": "smelt", "weight": 1}, {"step": "cast", "weight": 2}, {"step": "polish"}]


Post = Callable[..., Awaitable[None]]
STEPS_LEARNED = [3.0, 15.0, 4.0]
"""What the sessions of :func:`complete_two` teach of PLAN's steps."""


def poster(http: aiohttp.ClientSession, base: str) -> Post:
    """``post(session_id, at, step, progress, **fields)`` publishes a forge report to ``base``."""

    async def post(session_id: str, at: int, step: str, progress: float, **fields: object) -> None:
        body = event(session_id, "forge", ts=at, step=step, progress=progress, **fields)
        async with http.post(f"{base}/api/workflows/progress", json=body) as response:
            assert response.status == 202, await response.text()

    return post


async def complete_two(post: Post, start: int) -> None:
    """Two sessions of PLAN complete: smelt takes 2 and 4 s, cast 10 and 20 s, polish 6 and 2 s."""
    for number, (smelt, cast, polish) in enumerate(((2, 10, 6), (4, 20, 2))):
        session, at = f"done-{number}", start + number * 100_000
        await post(session, at, "smelt", 0, plan=PLAN)
        await post(session, at + smelt * 1000, "cast", 0)
        await post(session, at + (smelt + cast) * 1000, "polish", 0)
        await post(session, at + (smelt + cast + polish) * 1000, "polish", 100, status="completed")


async def learned_gateway(
    start_gateway: Callable[..., Gateway], redis_url: str, http: aiohttp.ClientSession
) -> tuple[Gateway, Post, int]:
    """A gateway that saw :func:`complete_two`, and a session "fresh" of PLAN begun ``now``."""
    gateway = start_gateway(redis_url, **QUIET)
    post = poster(http, gateway.url)
    now = int(time.time() * 1000)
    await complete_two(post, now - 600_000)
    await post("fresh", now, "smelt", 0, plan=PLAN)
    return gateway, post, now


async def cast_halfway(post: Post, now: int) -> None:
    """ "fresh" is halfway through its second step, 5 s in: 50 % overall."""
    await post("fresh", now + 5_000, "cast", 50)


def rule_at_cast_halfway(now: int, **learned: Any) -> float | None:
    """The rule's time remaining for "fresh" after :func:`cast_halfway`, given ``learned``."""
    return estimated_time_remaining(
        status="running",
        progress=50,
        metadata={},
        first_progress=0,
        started_at=now,
        updated_at=now + 5_000,
        step_index=2,
        step_progress=50,
        **learned,
    )


async def test_a_planned_session_is_estimated_from_its_steps_on_every_gateway(
    start_gateway: Callable[..., Gateway], redis_url: str, http: aiohttp.ClientSession
) -> None:
    first, post, now = await learned_gateway(start_gateway, redis_url, http)
    steps = STEPS_LEARNED
    state = await state_when(http, first.url, "fresh", typical_step_durations=steps)
    assert state["typical_duration"] == 22.0  # the sessions took 18 and 26 s
    assert state["estimated_time_remaining"] == 22.0  # the steps' sum, nothing elapsed yet

    # A gateway started now rebuilds the same from the stream's tail.
    second = start_gateway(redis_url, **QUIET)
    rebuilt = await state_when(http, second.url, "fresh", typical_step_durations=steps)
    assert rebuilt == state

    # Once the session moves, both blend its rate with the steps still to run.
    await cast_halfway(post, now)
    moved = await state_when(http, first.url, "fresh", step="cast")
    assert moved["overall_progress"] == 50
    by_steps = rule_at_cast_halfway(now, typical_duration=22.0, typical_step_durations=steps)
    assert moved["estimated_time_remaining"] == by_steps
    assert by_steps != rule_at_cast_halfway(now, typical_duration=22.0)
    again = await state_when(http, second.url, "fresh", step="cast")
    assert again == moved

"""Reporters' sessions declare a plan: their first event carries it, gateways do the sums."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from pydantic import ValidationError

from relay.client.reporters import AsyncReporter, HttpReporter, Reporter
from relay.protocol.plans import MAX_PLAN_STEPS, PlanSpec
from relay.server.settings import Settings
from tests.conftest import RedisServer
from tests.helpers import serving, state_when

PLAN: PlanSpec = [("analyzing", 1), ("generating", 6), "rendering"]
PLAN_JSON = [
    {"step": "analyzing", "weight": 1},
    {"step": "generating", "weight": 6},
    {"step": "rendering", "weight": 1},
]


def plans_sent(server: RedisServer, session_id: str) -> list[str | None]:
    with server.client() as client:
        entries = client.xrange("workflow:progress:map")
    return [f.get("plan") for _, f in entries if f["session_id"] == session_id]


@pytest.fixture
async def base(redis_url: str) -> AsyncIterator[str]:
    async with serving(Settings(redis_url=redis_url, read_block_ms=50)) as url:
        yield url


def run_blocking(reporter: Reporter | HttpReporter, session_id: str) -> None:
    with reporter.session("map", session_id, plan=PLAN, heartbeat_interval=0) as session:
        session.report("analyzing", 100)
        session.report("generating", 50)


async def test_every_reporter_sends_the_plan_once_with_the_first_event(
    redis_url: str, redis_server: RedisServer, base: str, http: aiohttp.ClientSession
) -> None:
    with Reporter(redis_url) as reporter:
        await asyncio.to_thread(run_blocking, reporter, "sync")
    await asyncio.to_thread(run_blocking, HttpReporter(base), "http")
    async with (
        AsyncReporter(redis_url) as areporter,
        areporter.session("map", "async", plan=PLAN, heartbeat_interval=0) as session,
    ):
        await session.report("analyzing", 100)
        await session.report("generating", 50)
    for session_id in ("sync", "http", "async"):
        first, *rest = plans_sent(redis_server, session_id)
        assert first is not None
        assert orjson.loads(first) == PLAN_JSON
        assert rest == [None, None]  # the second report and the end
        state = await state_when(http, base, session_id, status="completed")
        assert state["plan"] == PLAN_JSON
        assert state["overall_progress"] == 100
        assert (state["step_index"], state["step_count"]) == (2, 3)


async def test_a_session_before_its_end_shows_the_overall_figure(
    redis_url: str, base: str, http: aiohttp.ClientSession
) -> None:
    with Reporter(redis_url) as reporter:
        session = reporter.session("map", "midway", plan=PLAN, heartbeat_interval=0)
        with session:
            session.report("generating", 50)
            state = await state_when(http, base, "midway", step="generating")
            # 1 of 8 done, and half of 6: 4 of 8.
            assert state["overall_progress"] == 50
            assert state["step_progress"] == 50
            session.report("rendering", 50)
            state = await state_when(http, base, "midway", step="rendering")
            assert state["overall_progress"] == 93.75


@pytest.mark.parametrize(
    "plan",
    [[], [("a", 0)], [("", 1)], [f"s{n}" for n in range(MAX_PLAN_STEPS + 1)]],
    ids=["empty", "weightless", "unnamed", "too-long"],
)
def test_a_bad_plan_is_refused_when_the_session_is_made(
    redis_url: str, plan: list[str | tuple[str, float]]
) -> None:
    with Reporter(redis_url) as reporter, pytest.raises((ValueError, ValidationError)):
        reporter.session("map", "bad", plan=plan)

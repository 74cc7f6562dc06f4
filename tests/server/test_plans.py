"""Plans through gateways and Redis: overall progress in states, frames, snapshots and liveness."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp
import orjson

from relay.protocol.entries import now_ms
from relay.server.settings import Settings
from tests.conftest import RedisServer
from tests.helpers import (
    event,
    read_back,
    receive_events,
    serving,
    session_state,
    state_when,
    subscribe,
    until,
)

# Reports are stamped a little in the past, so the rates are the test's own.
NOW = now_ms() - 60_000
STREAM = "workflow:progress:map"
PLAN = [
    {"step": "analyzing", "weight": 1},
    {"step": "generating", "weight": 6},
    {"step": "rendering", "weight": 3},
]
# The origin app's way of reporting, each step from 0 to 100 in turn, with a
# plan in the first event: (step, progress, ms after the first, overall expected).
REPORTS = [
    ("analyzing", 0, 0, 0),
    ("analyzing", 100, 1000, 10),
    ("generating", 50, 4000, 40),
]


@asynccontextmanager
async def gateways(count: int, redis_url: str, **settings: Any) -> AsyncIterator[list[str]]:
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                serving(Settings(redis_url=redis_url, read_block_ms=50, **settings))
            )
            for _ in range(count)
        ]


async def publish(http: aiohttp.ClientSession, base: str, **fields: Any) -> str:
    async with http.post(f"{base}/api/workflows/progress", json=event(**fields)) as response:
        assert response.status == 202, await response.text()
        return str((await response.json())["id"])


async def publish_reports(http: aiohttp.ClientSession, base: str) -> None:
    for n, (step, progress, after, _) in enumerate(REPORTS):
        extra = {"plan": PLAN} if n == 0 else {}
        await publish(http, base, step=step, progress=progress, ts=NOW + after, **extra)


async def test_per_step_reports_with_a_plan_give_overall_progress_and_eta_everywhere(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    async with gateways(2, redis_url) as (first, second):
        ws = await http.ws_connect(f"{second.replace('http', 'ws')}/ws")
        await subscribe(ws, workflow_type="map")
        await publish_reports(http, first)
        frames = await receive_events(ws, len(REPORTS))
        for frame, (step, progress, _, overall) in zip(frames, REPORTS, strict=True):
            data = frame["data"]
            assert (data["step"], data["progress"]) == (step, progress)
            assert data["overall_progress"] == overall
            assert (data["step_index"], data["step_count"]) == (
                [p["step"] for p in PLAN].index(step) + 1,
                3,
            )
        assert "plan" in frames[0]["data"]
        assert "plan" not in frames[1]["data"]
        for base in (first, second):
            state = await state_when(http, base, "s1", step="generating")
            assert state["plan"] == PLAN
            assert (state["step_index"], state["step_count"]) == (2, 3)
            assert state["progress"] == state["step_progress"] == 50
            assert state["overall_progress"] == 40
            assert state["first_overall_progress"] == 0
            # 40% of the whole in 4 s: 60% more takes 6 s (on the step's own 50%, 4 s).
            assert state["estimated_time_remaining"] == 6.0
        # A late joiner's snapshot and the history carry the same figures. The
        # publishing gateway answers at once; its reader, which routes, is
        # waited for, or the late joiner would get the entries live instead.
        await read_back(http, first, len(REPORTS))
        late = await http.ws_connect(f"{first.replace('http', 'ws')}/ws")
        await subscribe(late, workflow_type="map", session_id="s1")
        [snapshot] = await receive_events(late, 1)
        assert snapshot["data"]["overall_progress"] == 40
        assert snapshot["data"]["step_index"] == 2
        async with http.get(f"{first}/api/workflows/sessions/s1/events") as response:
            history = await response.json()
        assert [e["data"]["overall_progress"] for e in history] == [r[3] for r in REPORTS]
        await ws.close()
        await late.close()


async def test_without_a_plan_the_state_is_todays(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    async with gateways(1, redis_url) as (base,):
        await publish(http, base, progress=10, ts=NOW)
        await publish(http, base, progress=30, ts=NOW + 2000)
        state = await state_when(http, base, "s1", progress=30)
        assert state["plan"] is None
        assert (state["step_index"], state["step_count"]) == (None, None)
        assert state["overall_progress"] == state["step_progress"] == 30
        assert state["estimated_time_remaining"] == 7.0
        async with http.get(f"{base}/api/workflows/sessions/s1/events") as response:
            history = await response.json()
        assert all("overall_progress" not in e["data"] for e in history)


async def test_an_unplanned_step_keeps_the_overall_figure_and_a_new_plan_replaces_the_old(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    async with gateways(1, redis_url) as (base,):
        await publish(http, base, step="analyzing", progress=100, plan=PLAN)
        await publish(http, base, step="cleanup", progress=50)
        state = await state_when(http, base, "s1", step="cleanup")
        assert (state["step_index"], state["overall_progress"]) == (None, 10)
        await publish(http, base, step="b", progress=50, plan=[{"step": "a"}, {"step": "b"}])
        state = await state_when(http, base, "s1", step="b")
        assert (state["step_index"], state["step_count"], state["overall_progress"]) == (2, 2, 75)
        async with http.get(f"{base}/api/workflows/sessions/s1/events") as response:
            history = await response.json()
        assert [e["data"]["overall_progress"] for e in history] == [10, None, 75]


async def test_raw_xadd_plans_are_read_and_bad_ones_skipped_without_harm(
    redis_url: str, redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    async with gateways(1, redis_url) as (base,):
        with redis_server.client() as client:
            client.xadd(STREAM, {"session_id": "bad", "step": "a", "progress": "1", "plan": "[{"})
            client.xadd(STREAM, {"session_id": "bad", "step": "a", "progress": "1", "plan": "[]"})
            client.xadd(
                STREAM,
                {
                    "session_id": "raw",
                    "step": "generating",
                    "progress": "50",
                    "plan": orjson.dumps(PLAN).decode(),
                },
            )
        state = await state_when(http, base, "raw", step_index=2)
        assert state["overall_progress"] == 40
        assert await session_state(http, base, "bad") is None

        async def counted() -> bool:
            async with http.get(f"{base}/metrics") as response:
                return "relay_invalid_entries_total 2.0" in await response.text()

        await until(counted, what="two invalid entries counted")
        # The reader goes on: a later report is read.
        await publish(http, base, session_id="raw", step="rendering", progress=0)
        await read_back(http, base, 2)
        assert (await state_when(http, base, "raw", step="rendering"))["overall_progress"] == 70


async def test_quiet_at_100_mid_plan_is_stalled_and_at_the_last_step_completed(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    async with gateways(2, redis_url, stall_after=0.5) as (first, second):
        await publish(http, first, session_id="mid", step="analyzing", progress=100, plan=PLAN)
        await publish(http, first, session_id="end", step="rendering", progress=100, plan=PLAN)
        stalled = await state_when(http, second, "mid", status="stalled")
        assert (stalled["step_index"], stalled["overall_progress"]) == (1, 10)
        done = await state_when(http, second, "end", status="completed")
        assert done["overall_progress"] == 100
        assert done["metadata"]["inferred"] is True


async def test_an_sse_resume_replays_the_plan_figures(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    async with gateways(1, redis_url) as (base,):
        first = await publish(http, base, step="analyzing", progress=100, plan=PLAN)
        await publish(http, base, step="generating", progress=50)
        await read_back(http, base, 2)
        url = f"{base}/api/workflows/events?workflow_type=map&session_id=s1"
        async with http.get(url, headers={"Last-Event-ID": first}) as response:
            while True:
                line = (await asyncio.wait_for(response.content.readline(), 10)).decode()
                if line.startswith("data:") and '"step":"generating"' in line:
                    break
        data = orjson.loads(line.removeprefix("data:"))
        assert (data["overall_progress"], data["step_index"], data["step_count"]) == (40, 2, 3)

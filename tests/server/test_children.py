"""Child sessions through gateways and Redis: one bar for the parent, live, cancel and liveness."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson

from relay.client.reporters import AsyncReporter, Reporter
from tests.conftest import RedisServer
from tests.helpers import (
    event,
    read_back,
    receive,
    receive_events,
    session_state,
    state_when,
    subscribe,
    until,
)
from tests.server.test_plans import gateways

STALL_AFTER = 0.5


async def publish(http: aiohttp.ClientSession, base: str, **fields: Any) -> str:
    fields.setdefault("workflow_type", "tile" if fields["session_id"].startswith("t") else "map")
    fields.setdefault("progress", 0)
    async with http.post(f"{base}/api/workflows/progress", json=event(**fields)) as response:
        assert response.status == 202, await response.text()
        return str((await response.json())["id"])


def statuses(redis_server: RedisServer, session_id: str, stream: str) -> list[str]:
    with redis_server.client() as client:
        entries = client.xrange(stream)
    return [f.get("status", "running") for _, f in entries if f["session_id"] == session_id]


async def test_two_gateways_answer_the_same_parent_and_its_subscribers_see_the_bar_move(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    async with gateways(2, redis_url) as (first, second):
        await publish(http, first, session_id="p1")
        await state_when(http, second, "p1", status="running")
        ws = await http.ws_connect(f"{second.replace('http', 'ws')}/ws")
        await subscribe(ws, workflow_type="map", session_id="p1")
        [snapshot] = await receive_events(ws, 1)
        assert snapshot["data"]["session_id"] == "p1"
        await publish(http, first, session_id="t1", parent_id="p1", progress=50)
        await publish(http, first, session_id="t2", parent_id="p1", weight=3, progress=10)
        await publish(http, first, session_id="t2", progress=30)
        await publish(http, first, session_id="t1", progress=100, status="completed")
        frames = await receive_events(ws, 4)
        assert [f["data"]["session_id"] for f in frames] == ["t1", "t2", "t2", "t1"]
        assert [f["data"]["parent_progress"] for f in frames] == [50, 20, 35, 47.5]
        assert [f["data"]["parent_children_count"] for f in frames] == [1, 2, 2, 2]
        assert frames[-1]["data"]["parent_children_completed"] == 1
        assert all(f["data"]["parent_id"] == "p1" for f in frames)
        for base in (first, second):
            state = await state_when(http, base, "p1", children_completed=1)
            assert state["overall_progress"] == 47.5
            assert state["progress"] == 0
            assert (state["children_count"], state["children_ongoing"]) == (2, 1)
            assert state["children"] == ["t1", "t2"]
        # A late subscriber's snapshot of the parent gives today's aggregate,
        # once the publishing gateway's reader (which routes) read it all back.
        await read_back(http, first, 1)
        await read_back(http, first, 4, workflow_type="tile")
        late = await http.ws_connect(f"{first.replace('http', 'ws')}/ws")
        await subscribe(late, workflow_type="*", session_id="p1")
        [fresh] = await receive_events(late, 1)
        assert fresh["data"]["session_id"] == "p1"
        assert fresh["data"]["overall_progress"] == 47.5
        assert (fresh["data"]["children_count"], fresh["data"]["children_completed"]) == (2, 1)
        # History replays carry no derived parent figures.
        async with http.get(f"{first}/api/workflows/sessions/t1/events") as response:
            history = await response.json()
        assert all("parent_progress" not in e["data"] for e in history)
        await ws.close()
        await late.close()


async def test_children_of_a_parent_not_seen_yet_attach_when_it_reports(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    async with gateways(1, redis_url) as (base,):
        await publish(http, base, session_id="t1", parent_id="p1", progress=40)
        await state_when(http, base, "t1", progress=40)
        assert await session_state(http, base, "p1") is None
        await publish(http, base, session_id="p1")
        state = await state_when(http, base, "p1", status="running")
        assert (state["overall_progress"], state["children_count"]) == (40, 1)


async def test_cancelling_a_parent_cancels_each_running_child_exactly_once(
    redis_url: str, redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    async with gateways(2, redis_url) as (first, second):
        await publish(http, first, session_id="p1")
        for child in ("t1", "t2", "t3"):
            await publish(http, first, session_id=child, parent_id="p1", progress=10)
        await publish(http, first, session_id="t3", progress=100, status="completed")
        await state_when(http, second, "p1", children_completed=1, children_count=3)
        ws = await http.ws_connect(f"{second.replace('http', 'ws')}/ws")
        await ws.send_str(orjson.dumps({"action": "cancel", "session_id": "p1"}).decode())
        answer = await receive(ws)
        assert answer["type"] == "cancel_requested"
        assert answer["children_cancel_requested"] == 2
        for base in (first, second):
            async with http.post(f"{base}/api/workflows/sessions/p1/cancel") as response:
                assert response.status == 202
                again = await response.json()
            assert again["children_cancel_requested"] == 2
            for child in ("t1", "t2"):
                await state_when(http, base, child, status="cancel_requested")
        tile = "workflow:progress:tile"
        for child in ("t1", "t2"):
            assert statuses(redis_server, child, tile).count("cancel_requested") == 1
        assert "cancel_requested" not in statuses(redis_server, "t3", tile)
        assert statuses(redis_server, "p1", "workflow:progress:map").count("cancel_requested") == 1
        await ws.close()


async def test_a_quiet_parent_is_not_stalled_while_its_children_report(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    async with gateways(2, redis_url, stall_after=STALL_AFTER) as (first, second):
        await publish(http, first, session_id="p1")
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        progress = 0

        async def child_reports() -> bool:
            nonlocal progress
            progress = min(progress + 10, 90)
            await publish(http, first, session_id="t1", parent_id="p1", progress=progress)
            state = await session_state(http, second, "p1")
            assert state["status"] == "running", state
            await asyncio.sleep(STALL_AFTER / 5)  # the worker's pace
            return loop.time() - quiet_since > 3 * STALL_AFTER

        await until(child_reports, what="three stall times of child reports")
        await publish(http, first, session_id="t1", progress=100, status="completed")
        done = await state_when(http, second, "p1", status="completed")
        assert done["metadata"]["inferred"] is True
        assert done["overall_progress"] == 100


async def test_a_parent_with_a_failed_child_stalls_rather_than_completes(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    async with gateways(1, redis_url, stall_after=STALL_AFTER) as (base,):
        await publish(http, base, session_id="p1")
        await publish(http, base, session_id="t1", parent_id="p1", progress=100)
        await publish(http, base, session_id="t1", progress=100, status="failed", error="x")
        stalled = await state_when(http, base, "p1", status="stalled")
        assert stalled["overall_progress"] == 100
        assert stalled["children_failed"] == 1


def run_children(redis_url: str) -> None:
    with (
        Reporter(redis_url) as reporter,
        reporter.session("map", "p-sync", heartbeat_interval=0) as parent,
    ):
        for n in range(2):
            with parent.child("tile", f"t-sync-{n}", weight=n + 1, heartbeat_interval=0) as tile:
                tile.report("render", 50)


async def test_reporters_start_child_sessions_sync_and_async(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    async with gateways(1, redis_url) as (base,):
        await asyncio.to_thread(run_children, redis_url)
        state = await state_when(http, base, "p-sync", children_completed=2)
        assert state["children"] == ["t-sync-1", "t-sync-0"]
        child = await session_state(http, base, "t-sync-1")
        assert (child["parent_id"], child["weight"], child["workflow_type"]) == (
            "p-sync",
            2,
            "tile",
        )
        async with (
            AsyncReporter(redis_url) as reporter,
            reporter.session("map", "p-async", heartbeat_interval=0, owner="u1") as parent,
            parent.child("tile", "t-async", heartbeat_interval=0) as tile,
        ):
            # A parent has a state once it reported itself; its bar is its children's.
            await parent.report("fan-out", 0)
            await tile.report("render", 25)
            state = await state_when(http, base, "p-async", overall_progress=25)
            assert state["children"] == ["t-async"]
        child = await state_when(http, base, "t-async", status="completed")
        assert (child["parent_id"], child["weight"], child["owner"]) == ("p-async", None, "u1")

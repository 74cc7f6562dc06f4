"""Session state, listings, history, terminal sessions and cancellation over HTTP."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from relay.client.reporters import AsyncReporter, HttpReporter, Reporter
from relay.client.reporting_session import CancelRequested
from relay.server.settings import Settings
from tests.helpers import event, receive, receive_events, serving, state_when, until

# Every test here runs on a single Redis and on a Redis Cluster.
pytestmark = pytest.mark.stores


@pytest.fixture
async def base(redis_url: str) -> AsyncIterator[str]:
    async with serving(Settings(redis_url=redis_url, read_block_ms=100)) as url:
        yield url


async def post(http: aiohttp.ClientSession, base: str, **fields: Any) -> dict[str, Any]:
    async with http.post(f"{base}/api/workflows/progress", json=event(**fields)) as response:
        assert response.status == 202, await response.text()
        answer: dict[str, Any] = await response.json()
        return answer


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as response:
        return response.status, await response.json()


async def test_session_state_fields(base: str, http: aiohttp.ClientSession) -> None:
    first = await post(http, base, progress=10)
    last = await post(http, base, progress=55, step="texturing", metadata={"tiles": 4})
    state = await state_when(http, base, "s1", last_event_id=last["id"])
    assert state["session_id"] == "s1"
    assert state["workflow_type"] == "map"
    assert state["step"] == "texturing"
    assert state["progress"] == 55
    assert state["status"] == "running"
    assert state["error"] is None
    assert state["metadata"] == {"tiles": 4}
    assert state["started_at"] == int(first["id"].split("-")[0]) or state["started_at"] > 0
    assert state["updated_at"] >= state["started_at"]
    assert "estimated_time_remaining" in state
    assert state["last_event_id"] == last["id"]


async def test_unknown_and_invalid_sessions(base: str, http: aiohttp.ClientSession) -> None:
    status, body = await get(http, f"{base}/api/workflows/sessions/nobody")
    assert status == 404
    assert body["error"] == "not_found"
    status, body = await get(http, f"{base}/api/workflows/sessions/bad%20id")
    assert status == 422
    assert body["detail"][0]["field"] == "session_id"


async def test_listing_with_filters(base: str, http: aiohttp.ClientSession) -> None:
    await post(http, base, session_id="m1")
    await post(http, base, session_id="c1", workflow_type="character")
    done = await post(http, base, session_id="m2", status="completed", progress=100)
    await state_when(http, base, "m2", last_event_id=done["id"])
    status, listed = await get(http, f"{base}/api/workflows/sessions?workflow_type=map")
    assert status == 200
    assert [s["session_id"] for s in listed] == ["m2", "m1"]
    _, running = await get(http, f"{base}/api/workflows/sessions?status=running")
    assert {s["session_id"] for s in running} == {"m1", "c1"}
    _, limited = await get(http, f"{base}/api/workflows/sessions?limit=1")
    assert len(limited) == 1
    status, body = await get(http, f"{base}/api/workflows/sessions?status=paused")
    assert status == 422
    assert body["detail"][0]["field"] == "status"
    status, _ = await get(http, f"{base}/api/workflows/sessions?limit=0")
    assert status == 422


async def test_history_oldest_first_with_since_and_limit(
    base: str, http: aiohttp.ClientSession
) -> None:
    ids = []
    for n in range(5):
        ids.append((await post(http, base, progress=n * 10))["id"])
        await post(http, base, session_id="noise", progress=n)
    await state_when(http, base, "s1", last_event_id=ids[-1])
    status, history = await get(http, f"{base}/api/workflows/sessions/s1/events")
    assert status == 200
    assert [e["id"] for e in history] == ids
    assert history[0]["event"] == "workflow:progress:map"
    assert history[0]["data"]["progress"] == 0
    _, tail = await get(http, f"{base}/api/workflows/sessions/s1/events?since={ids[1]}&limit=2")
    assert [e["id"] for e in tail] == ids[2:4]
    status, _ = await get(http, f"{base}/api/workflows/sessions/s1/events?since=later")
    assert status == 422


async def test_ended_session_refuses_more_events(base: str, http: aiohttp.ClientSession) -> None:
    done = await post(http, base, status="failed", error="out of memory", progress=30)
    state = await state_when(http, base, "s1", last_event_id=done["id"])
    assert state["status"] == "failed"
    assert state["error"] == "out of memory"
    async with http.post(f"{base}/api/workflows/progress", json=event()) as response:
        assert response.status == 409
        assert (await response.json())["error"] == "session_ended"
    batch = [event(session_id="fresh"), event(session_id="s1")]
    async with http.post(f"{base}/api/workflows/progress/batch", json=batch) as response:
        assert response.status == 409
    status, _ = await get(http, f"{base}/api/workflows/sessions/fresh")
    assert status == 404  # all or none


async def test_cancel_reaches_subscribers_and_the_http_publisher(
    base: str, http: aiohttp.ClientSession
) -> None:
    started = await post(http, base, progress=20)
    assert started["cancel_requested"] is False
    await state_when(http, base, "s1", last_event_id=started["id"])
    async with http.ws_connect(f"{base}/ws?workflow_type=map&session_id=s1") as ws:
        assert (await receive(ws))["type"] == "subscribed"
        [latest] = await receive_events(ws, 1)
        assert latest["id"] == started["id"]
        async with http.post(f"{base}/api/workflows/sessions/s1/cancel") as response:
            assert response.status == 202
            answer = await response.json()
        assert answer["status"] == "cancel_requested"
        [frame] = await receive_events(ws, 1)
        assert frame["id"] == answer["id"]
        assert frame["data"]["status"] == "cancel_requested"
        assert frame["data"]["progress"] == 20  # the session's progress is kept
        next_report = await post(http, base, progress=25)
        assert next_report["cancel_requested"] is True
        cancelled = await post(http, base, progress=25, status="cancelled")
        [_, end] = await receive_events(ws, 2)
        assert end["id"] == cancelled["id"]
        assert end["data"]["status"] == "cancelled"
    async with http.post(f"{base}/api/workflows/sessions/s1/cancel") as response:
        assert response.status == 409


async def test_cancel_of_unknown_session_is_404(base: str, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{base}/api/workflows/sessions/ghost/cancel") as response:
        assert response.status == 404


async def test_websocket_cancel_action(base: str, http: aiohttp.ClientSession) -> None:
    started = await post(http, base)
    await state_when(http, base, "s1", last_event_id=started["id"])
    async with http.ws_connect(f"{base}/ws") as ws:
        await ws.send_json({"action": "cancel", "session_id": "s1"})
        answer = await receive(ws)
        assert answer["type"] == "cancel_requested"
        assert answer["session_id"] == "s1"
        await ws.send_json({"action": "cancel", "session_id": "ghost"})
        assert (await receive(ws))["code"] == "not_found"


async def cancel_when_seen(http: aiohttp.ClientSession, base: str, session: str) -> None:
    async def cancelled() -> bool:
        async with http.post(f"{base}/api/workflows/sessions/{session}/cancel") as response:
            return response.status == 202

    await until(cancelled, what=f"a cancel of {session} to be accepted")


async def test_python_worker_session_learns_of_cancellation(
    base: str, redis_url: str, http: aiohttp.ClientSession
) -> None:
    def worker() -> list[str]:
        steps = []
        with (
            Reporter(redis_url) as reporter,
            reporter.session("map", "job1", raise_on_cancel=True) as session,
        ):
            for n in range(1000):
                session.report(f"step{n}", n / 10)
                steps.append(f"step{n}")
                if n == 0:
                    started.set()
                time.sleep(0.01)
        return steps

    started = threading.Event()
    running = asyncio.create_task(asyncio.to_thread(worker))
    await asyncio.to_thread(started.wait, 10)
    await cancel_when_seen(http, base, "job1")
    steps = await asyncio.wait_for(running, 20)
    assert len(steps) < 1000
    await state_when(http, base, "job1", status="cancelled")


async def test_session_context_manager_marks_completed_and_failed(
    base: str, redis_url: str, http: aiohttp.ClientSession
) -> None:
    async with AsyncReporter(redis_url) as reporter:
        async with reporter.session("map", "ok") as session:
            await session.report("render", 50)

        async def failing() -> None:
            async with reporter.session("map", "bad") as session:
                await session.report("render", 30)
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            await failing()
        async with reporter.session("map", "stop") as session:
            await session.report("render", 10)
            raise CancelRequested("stop")

    def http_worker() -> str:
        with HttpReporter(base).session("character") as generated:
            generated.report("portrait", 5)
        return generated.session_id

    generated_id = await asyncio.to_thread(http_worker)
    expected = {
        "ok": ("completed", 100, None),
        "bad": ("failed", 30, "RuntimeError: boom"),
        "stop": ("cancelled", 10, None),
        generated_id: ("completed", 100, None),
    }
    for session_id, (status, progress, error) in expected.items():
        body = await state_when(http, base, session_id, status=status)
        assert (body["progress"], body["error"]) == (progress, error)

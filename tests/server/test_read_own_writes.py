"""The gateway that accepted a publish answers for it at once, and its reader changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from relay.server.app import create_app
from relay.server.gateway import GATEWAY
from relay.server.settings import Settings
from tests.conftest import RedisServer
from tests.helpers import (
    Gateway,
    event,
    read_back,
    receive,
    session_state,
    state_when,
    subscribe,
)
from tests.server.test_session_view import feed, make_view

READER_TASK = "relay-stream-reader"


@pytest.fixture
async def app_without_reader(redis_url: str) -> AsyncIterator[tuple[str, web.Application]]:
    """A gateway whose reader has stopped: whatever it knows of a publish, it knows from it."""
    app = create_app(Settings(redis_url=redis_url, read_block_ms=100))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    [task] = [t for t in asyncio.all_tasks() if t.get_name() == READER_TASK]
    await app[GATEWAY].reader.stop(task)
    try:
        yield str(server.make_url("")).rstrip("/"), app
    finally:
        await server.close()


async def post(http: aiohttp.ClientSession, url: str, body: object) -> dict[str, Any]:
    async with http.post(url, json=body) as response:
        assert response.status == 202, await response.text()
        answer: dict[str, Any] = await response.json()
        return answer


async def test_a_session_is_known_and_cancellable_right_after_its_first_publish(
    app_without_reader: tuple[str, web.Application],
    redis_server: RedisServer,
    http: aiohttp.ClientSession,
) -> None:
    base, _ = app_without_reader
    answer = await post(http, f"{base}/api/workflows/progress", event("fresh", progress=30))
    state = await session_state(http, base, "fresh")
    assert state is not None
    assert state["last_event_id"] == answer["id"]
    with redis_server.client() as client:
        [(_, fields)] = client.xrange("workflow:progress:map", answer["id"], answer["id"])
    assert state["updated_at"] == state["started_at"] == int(fields["ts"])
    cancel = await post(http, f"{base}/api/workflows/sessions/fresh/cancel", {})
    assert cancel["status"] == "cancel_requested"
    state = await session_state(http, base, "fresh")
    assert state["status"] == "cancel_requested"
    assert state["last_event_id"] == cancel["id"]


async def test_a_batch_is_known_at_once_and_its_end_refuses_more(
    app_without_reader: tuple[str, web.Application], http: aiohttp.ClientSession
) -> None:
    base, _ = app_without_reader
    batch = [event("b1", progress=10), event("b1", progress=100, status="completed")]
    answer = await post(http, f"{base}/api/workflows/progress/batch", batch)
    state = await session_state(http, base, "b1")
    assert state["status"] == "completed"
    assert state["last_event_id"] == answer["ids"][-1]
    async with http.post(f"{base}/api/workflows/progress", json=event("b1")) as response:
        assert response.status == 409


async def test_a_late_joiner_is_not_sent_what_the_reader_has_not_routed(
    app_without_reader: tuple[str, web.Application], http: aiohttp.ClientSession
) -> None:
    # The reader would route the event to the subscriber live: sent as the
    # current state too, it would arrive twice.
    base, _ = app_without_reader
    await post(http, f"{base}/api/workflows/progress", event("late"))
    async with http.ws_connect(f"{base}/ws") as ws:
        await subscribe(ws, workflow_type="map", session_id="late")
        await ws.send_str(orjson.dumps({"action": "ping"}).decode())
        assert (await receive(ws))["type"] == "pong"


async def test_reading_back_what_was_applied_changes_nothing(
    start_gateway: Callable[..., Gateway], redis_url: str, http: aiohttp.ClientSession
) -> None:
    gateway = start_gateway(redis_url)
    url = f"{gateway.url}/api/workflows/progress"
    first = await post(http, url, event("rw", progress=10))
    last = await post(http, url, event("rw", progress=40, step="rendering"))
    applied = await session_state(http, gateway.url, "rw")
    await read_back(http, gateway.url, 2)
    assert await state_when(http, gateway.url, "rw", last_event_id=last["id"]) == applied
    assert applied["started_at"] < applied["updated_at"]
    assert first["id"] != last["id"]


def test_an_event_at_or_below_the_latest_id_is_a_no_op() -> None:
    view = make_view()
    feed(view, 0, progress=0)
    feed(view, 5, progress=50, step="later")
    before = view.get("s1")
    assert before is not None
    snapshot = before.as_dict()
    feed(view, 5, progress=50, step="later")  # the same entry, read back
    feed(view, 3, progress=30, step="earlier")  # an older one arriving late
    after = view.get("s1")
    assert after is not None
    assert after.as_dict() == snapshot

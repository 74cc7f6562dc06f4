"""A pending cancel stays pending: ordinary reports after it keep the session cancelling.

Two real gateways on one Redis: the cancel is requested through one, the
worker reports through the other (or straight into the stream), and every
way a subscriber or caller learns of the session says it is cancelling.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest

from relay.protocol.event import ProgressEvent, as_delivered, event_from_data
from relay.server.session_view import SessionView
from tests.helpers import (
    DEFAULT_TIMEOUT,
    Gateway,
    async_store_client,
    event,
    first_watch_line,
    read_back,
    receive,
    receive_events,
    start_watch,
    state_when,
    subscribe,
)
from tests.server.test_sse import next_event

# Every test here runs on a single Redis and on a Redis Cluster.
pytestmark = pytest.mark.stores

CANCELLING = {"status": "cancel_requested", "cancel_requested": True}


@pytest.fixture
def gateways(start_gateway: Callable[..., Gateway], redis_url: str) -> tuple[Gateway, Gateway]:
    return start_gateway(redis_url), start_gateway(redis_url)


async def post(http: aiohttp.ClientSession, base: str, **fields: Any) -> dict[str, Any]:
    async with http.post(f"{base}/api/workflows/progress", json=event(**fields)) as response:
        assert response.status == 202, await response.text()
        answer: dict[str, Any] = await response.json()
        return answer


async def cancel(http: aiohttp.ClientSession, base: str, session_id: str = "s1") -> str:
    async with http.post(f"{base}/api/workflows/sessions/{session_id}/cancel") as response:
        assert response.status == 202, await response.text()
        return str((await response.json())["id"])


async def history(http: aiohttp.ClientSession, base: str, since: str = "") -> list[Any]:
    query = f"?since={since}" if since else ""
    async with http.get(f"{base}/api/workflows/sessions/s1/events{query}") as response:
        assert response.status == 200
        frames: list[Any] = await response.json()
        return frames


def flags(frame: dict[str, Any]) -> tuple[str, bool | None]:
    """What an event frame says of cancellation: its status and its cancel_requested field."""
    data = frame["data"]
    return data["status"], data.get("cancel_requested")


async def socketio_event(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    """The next progress event a Socket.IO WebSocket receives, as an event frame."""
    while True:
        message = await asyncio.wait_for(ws.receive(), DEFAULT_TIMEOUT)
        assert message.type is aiohttp.WSMsgType.TEXT, message
        if message.data.startswith('42["workflow:progress:'):
            name, data, _offset = orjson.loads(message.data[2:])
            return {"event": name, "data": data}


async def socketio_connected(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Wait for the CONNECT answer, after which the connection's subscriptions are made."""
    while True:
        message = await asyncio.wait_for(ws.receive(), DEFAULT_TIMEOUT)
        assert message.type is aiohttp.WSMsgType.TEXT, message
        if message.data.startswith("40"):
            return


async def test_reports_after_a_cancel_keep_the_session_cancelling_everywhere(
    gateways: tuple[Gateway, Gateway], redis_url: str, http: aiohttp.ClientSession
) -> None:
    one, two = (gateway.url for gateway in gateways)
    started = await post(http, one, progress=20)
    await state_when(http, two, "s1", last_event_id=started["id"])
    async with (
        http.ws_connect(f"{two}/ws") as ws,
        http.ws_connect(f"{two}/socket.io/?EIO=4&transport=websocket") as sio,
        http.get(f"{one}/api/workflows/events?workflow_type=map&session_id=s1") as sse,
    ):
        await subscribe(ws, workflow_type="map", session_id="s1")
        [_] = await receive_events(ws, 1)
        await sio.send_str("40")
        await socketio_connected(sio)
        # Once the stream's first event arrived, the SSE subscription is in place.
        assert (await next_event(sse))["id"] == started["id"]
        cancel_id = await cancel(http, one)
        [cancel_frame] = await receive_events(ws, 1)
        assert cancel_frame["id"] == cancel_id
        assert flags(cancel_frame) == ("cancel_requested", True)
        # The worker's next ordinary report, through the other gateway, and one
        # written straight into the stream as any worker may.
        report = await post(http, two, progress=30, step="texturing")
        assert report["cancel_requested"] is True
        async with async_store_client(redis_url) as raw:
            fields = {"session_id": "s1", "step": "texturing", "progress": "35"}
            raw_id = await raw.xadd("workflow:progress:map", fields)  # type: ignore[arg-type]
        live = await receive_events(ws, 2)
        assert [frame["id"] for frame in live] == [report["id"], raw_id]
        assert [flags(frame) for frame in live] == [("cancel_requested", True)] * 2
        sse_events = [await next_event(sse) for _ in range(3)]
        assert [message["id"] for message in sse_events] == [cancel_id, report["id"], raw_id]
        for message in sse_events:
            assert orjson.loads(message["data"]) | CANCELLING == orjson.loads(message["data"])
        sio_events = [await socketio_event(sio) for _ in range(3)]
        assert [flags(frame) for frame in sio_events] == [("cancel_requested", True)] * 3

    for base in (one, two):
        state = await state_when(http, base, "s1", last_event_id=raw_id)
        assert (state["status"], state["cancel_requested"], state["progress"]) == (
            "cancel_requested",
            True,
            35,
        )
        # Asking again answers the pending request, through either gateway.
        assert await cancel(http, base) == cancel_id
        async with http.get(f"{base}/api/workflows/sessions?status=cancel_requested") as listing:
            assert [s["session_id"] for s in await listing.json()] == ["s1"]
        # A replay from before the cancel: the entry before it says what it said.
        async with http.ws_connect(f"{base}/ws") as ws:
            await subscribe(ws, workflow_type="map", session_id="s1", since="0-0")
            replayed = await receive_events(ws, 4)
            assert [frame["id"] for frame in replayed] == [
                started["id"],
                cancel_id,
                report["id"],
                raw_id,
            ]
            assert flags(replayed[0]) == ("running", None)
            assert [flags(f) for f in replayed[1:]] == [("cancel_requested", True)] * 3
        # The history endpoint answers the very same frames.
        assert await history(http, base) == replayed
        assert await history(http, base, since=cancel_id) == replayed[2:]
        # So does a late joiner's snapshot.
        async with http.ws_connect(f"{base}/ws") as ws:
            await subscribe(ws, workflow_type="map", snapshot=True)
            [latest] = await receive_events(ws, 1)
            assert latest == replayed[-1]


async def test_a_terminal_report_ends_the_pending_cancel(
    gateways: tuple[Gateway, Gateway], http: aiohttp.ClientSession
) -> None:
    one, two = (gateway.url for gateway in gateways)
    started = await post(http, one, progress=20)
    await state_when(http, one, "s1", last_event_id=started["id"])
    cancel_id = await cancel(http, one)
    # A gateway that publishes for a session before reading of it starts the
    # session's history there: the report goes through two once it has read the cancel.
    await state_when(http, two, "s1", last_event_id=cancel_id)
    report = await post(http, two, progress=30)
    async with http.ws_connect(f"{one}/ws") as ws:
        await subscribe(ws, workflow_type="map", session_id="s1")
        [latest] = await receive_events(ws, 1)
        assert latest["id"] == report["id"]
        assert flags(latest) == ("cancel_requested", True)
        ended = await post(http, two, progress=30, status="cancelled")
        [end] = await receive_events(ws, 1)
        assert end["id"] == ended["id"]
        assert flags(end) == ("cancelled", None)
    for base in (one, two):
        state = await state_when(http, base, "s1", last_event_id=ended["id"])
        assert (state["status"], state["cancel_requested"]) == ("cancelled", False)
        async with http.post(f"{base}/api/workflows/sessions/s1/cancel") as response:
            assert response.status == 409
        frames = await history(http, base)
        assert [f["id"] for f in frames] == [started["id"], cancel_id, report["id"], ended["id"]]
        assert [flags(f) for f in frames] == [
            ("running", None),
            ("cancel_requested", True),
            ("cancel_requested", True),
            ("cancelled", None),
        ]


async def test_a_gateway_started_after_the_cancel_rebuilds_it(
    start_gateway: Callable[..., Gateway], redis_url: str, http: aiohttp.ClientSession
) -> None:
    first = start_gateway(redis_url).url
    await post(http, first, progress=20)
    await cancel(http, first)
    report = await post(http, first, progress=40)
    late = start_gateway(redis_url).url
    await read_back(http, late, 3)
    state = await state_when(http, late, "s1", last_event_id=report["id"])
    assert (state["status"], state["cancel_requested"]) == ("cancel_requested", True)
    async with http.ws_connect(f"{late}/ws?workflow_type=map&session_id=s1") as ws:
        assert (await receive(ws))["type"] == "subscribed"
        [latest] = await receive_events(ws, 1)
        assert flags(latest) == ("cancel_requested", True)


async def test_relay_watch_shows_the_report_after_a_cancel_as_cancelling(
    start_gateway: Callable[..., Gateway], redis_url: str, http: aiohttp.ClientSession
) -> None:
    gateway = start_gateway(redis_url)
    watcher = await start_watch(gateway, "--type", "map")
    assert watcher.stdout is not None
    try:
        line = await first_watch_line(
            watcher, lambda attempt: post(http, gateway.url, progress=attempt)
        )
        await cancel(http, gateway.url)
        await post(http, gateway.url, progress=60, step="texturing")
        while b"texturing" not in line:
            line = await asyncio.wait_for(watcher.stdout.readline(), DEFAULT_TIMEOUT)
        assert line.decode().split() == ["map", "s1", "60%", "cancel_requested", "texturing"]
    finally:
        watcher.terminate()
        await watcher.wait()


def _event(progress: float, status: str = "running") -> ProgressEvent:
    return ProgressEvent.model_validate(
        {"session_id": "s1", "workflow_type": "map", "step": "go", "progress": progress}
        | {"status": status, "ts": 1}
    )


def test_the_rule_leaves_terminal_events_and_quiet_sessions_alone() -> None:
    running, ended = _event(30), _event(30, "cancelled")
    assert as_delivered(running, cancel_pending=False) is running
    assert as_delivered(ended, cancel_pending=True) is ended
    delivered = as_delivered(running, cancel_pending=True)
    assert delivered.data() == running.data() | CANCELLING
    # A client reading a delivered frame back gets a valid event.
    assert event_from_data(delivered.data()) == delivered


def test_the_view_annotates_only_what_came_between_the_cancel_and_the_end() -> None:
    view = SessionView(ttl_ms=10**15, max_sessions=10, clock=lambda: 2)
    entries = [
        ("1-0", _event(10)),
        ("2-0", _event(10, "cancel_requested")),
        ("3-0", _event(20)),
        ("4-0", _event(20, "cancelled")),
        ("5-0", _event(25)),
    ]
    live = []
    for entry_id, report in entries:
        envelope, delivered = view.delivered(entry_id, report)
        view.apply(envelope, delivered)
        live.append(envelope)
    replayed = [view.delivered(entry_id, report)[0] for entry_id, report in entries]
    statuses = ["running", "cancel_requested", "cancel_requested", "cancelled", "running"]
    for envelopes in (live, replayed):
        assert [orjson.loads(e.data_json)["status"] for e in envelopes] == statuses
    assert [e.frame for e in live[:4]] == [e.frame for e in replayed[:4]]
    state = view.get("s1")
    assert state is not None
    assert state.as_dict()["cancel_requested"] is False

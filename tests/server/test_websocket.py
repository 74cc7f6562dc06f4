"""The WebSocket endpoint in one gateway against a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from relay.server.settings import Settings
from tests.helpers import event, receive, receive_events, serving, subscribe, until


@pytest.fixture
async def base(redis_url: str) -> AsyncIterator[str]:
    async with serving(Settings(redis_url=redis_url, max_subscriptions=3)) as url:
        yield url


async def post(http: aiohttp.ClientSession, base: str, **fields: Any) -> str:
    async with http.post(f"{base}/api/workflows/progress", json=event(**fields)) as response:
        assert response.status == 202, await response.text()
        return str((await response.json())["id"])


async def test_type_subscription_receives_only_that_type(
    base: str, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(f"{base}/ws") as ws:
        answer = await subscribe(ws, workflow_type="map")
        assert answer == {"type": "subscribed", "workflow_type": "map", "session_id": None}
        await post(http, base, workflow_type="character")
        wanted = await post(http, base, workflow_type="map", session_id="s9", progress=12.5)
        [frame] = await receive_events(ws, 1)
    assert frame["id"] == wanted
    assert frame["event"] == "workflow:progress:map"
    assert frame["data"]["session_id"] == "s9"
    assert frame["data"]["progress"] == 12.5


async def test_session_subscription_and_wildcard(base: str, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(f"{base}/ws") as one, http.ws_connect(f"{base}/ws") as every:
        await subscribe(one, workflow_type="map", session_id="s2")
        await subscribe(every, workflow_type="*")
        ids = [
            await post(http, base, session_id="s1"),
            await post(http, base, session_id="s2"),
            await post(http, base, workflow_type="encounter", session_id="s2"),
        ]
        assert [f["id"] for f in await receive_events(one, 1)] == [ids[1]]
        # order is per type (per stream); across types it is not promised
        assert sorted(f["id"] for f in await receive_events(every, 3)) == sorted(ids)
        # the next thing "one" sees is a later s2 event: nothing else slipped in before it
        last = await post(http, base, session_id="s2", progress=99)
        assert [f["id"] for f in await receive_events(one, 1)] == [last]


async def test_query_string_subscription(base: str, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(f"{base}/ws?workflow_type=map&session_id=s1") as ws:
        assert (await receive(ws))["type"] == "subscribed"
        wanted = await post(http, base)
        assert [f["id"] for f in await receive_events(ws, 1)] == [wanted]


async def test_bad_query_string_is_refused_before_upgrade(
    base: str, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{base}/ws?workflow_type=Not%20Valid") as response:
        assert response.status == 422
        assert (await response.json())["detail"][0]["field"] == "workflow_type"


async def test_unsubscribe_stops_delivery(base: str, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(f"{base}/ws") as ws:
        await subscribe(ws, workflow_type="map")
        await subscribe(ws, workflow_type="character")
        await ws.send_json({"action": "unsubscribe", "workflow_type": "map"})
        assert await receive(ws) == {
            "type": "unsubscribed",
            "workflow_type": "map",
            "session_id": None,
        }
        await post(http, base, workflow_type="map")
        wanted = await post(http, base, workflow_type="character")
        assert [f["id"] for f in await receive_events(ws, 1)] == [wanted]
        await ws.send_json({"action": "unsubscribe", "workflow_type": "map"})
        assert (await receive(ws))["code"] == "not_subscribed"


@pytest.mark.parametrize(
    ("frame", "field"),
    [
        ("not json", None),
        ("[1,2]", None),
        ('{"action": "dance"}', "body"),
        ('{"action": "subscribe"}', "subscribe.workflow_type"),
        ('{"action": "subscribe", "workflow_type": "MAP"}', "subscribe.workflow_type"),
        ('{"action": "subscribe", "workflow_type": "*", "since": "1-0"}', "subscribe"),
        (
            '{"action": "subscribe", "workflow_type": "map", "since": "yesterday"}',
            "subscribe.since",
        ),
        ('{"action": "subscribe", "workflow_type": "map", "color": "red"}', "subscribe.color"),
    ],
)
async def test_bad_frame_gets_error_frame_and_connection_stays_usable(
    base: str, http: aiohttp.ClientSession, frame: str, field: str | None
) -> None:
    async with http.ws_connect(f"{base}/ws") as ws:
        await ws.send_str(frame)
        error = await receive(ws)
        assert error["type"] == "error"
        assert error["code"] == "invalid_message"
        if field is not None:
            assert field in {item["field"] for item in error["detail"]}
        await ws.send_bytes(b"\x00\x01")
        assert (await receive(ws))["code"] == "invalid_message"
        await ws.send_json({"action": "ping"})
        assert await receive(ws) == {"type": "pong"}
        await subscribe(ws, workflow_type="map")
        wanted = await post(http, base)
        assert [f["id"] for f in await receive_events(ws, 1)] == [wanted]


async def test_subscription_limit_per_connection(base: str, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(f"{base}/ws") as ws:
        for wtype in ("a", "b", "c"):
            await subscribe(ws, workflow_type=wtype)
        await subscribe(ws, workflow_type="a")  # the same subscription again is fine
        await ws.send_json({"action": "subscribe", "workflow_type": "d"})
        assert (await receive(ws))["code"] == "too_many_subscriptions"


async def test_oversize_frame_closes_with_1009(redis_url: str, http: aiohttp.ClientSession) -> None:
    settings = Settings(redis_url=redis_url, max_ws_frame_bytes=1024)
    async with serving(settings) as url, http.ws_connect(f"{url}/ws") as ws:
        await ws.send_str(orjson.dumps({"action": "ping", "pad": "x" * 2000}).decode())
        message = await ws.receive(timeout=10)
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 1009

        async def counted() -> bool:
            async with http.get(f"{url}/metrics") as response:
                text = await response.text()
            return 'relay_requests_rejected_total{reason="frame_too_large"} 1.0' in text

        await until(counted, what="the oversize frame counted")

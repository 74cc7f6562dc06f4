"""What an upgraded connection lets go of, and aiohttp's attributes that relies on."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.web_protocol import RequestHandler

from relay.server.settings import Settings
from tests.helpers import receive, serving, subscribe


@pytest.fixture
async def base(redis_url: str) -> AsyncIterator[str]:
    async with serving(Settings(redis_url=redis_url, ws_rate=0)) as url:
        yield url


def test_aiohttp_still_has_the_attributes_dropping_the_parser_relies_on() -> None:
    slots = {name for cls in RequestHandler.__mro__ for name in getattr(cls, "__slots__", ())}
    assert {"_parser", "_payload_parser", "_upgraded"} <= slots


def upgraded_handlers() -> list[RequestHandler]:
    gc.collect()
    return [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, RequestHandler) and obj._upgraded and obj.transport is not None
    ]


@pytest.mark.parametrize("path", ["/ws", "/socket.io/?EIO=4&transport=websocket"])
async def test_an_upgraded_connection_drops_its_http_parser(
    base: str, http: aiohttp.ClientSession, path: str
) -> None:
    async with http.ws_connect(f"{base}{path}"):
        [handler] = upgraded_handlers()
        assert handler._parser is None
        assert handler._payload_parser is not None


async def test_a_connection_without_its_http_parser_still_pauses_and_resumes_reading(
    base: str, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(f"{base}/ws") as ws:
        await subscribe(ws, workflow_type="map")
        # Far more than the WebSocket reader buffers before it pauses the transport.
        junk = "x" * 16_000
        for _ in range(100):
            await ws.send_str(junk)
        await ws.send_json({"action": "ping"})
        answers = [await receive(ws) for _ in range(101)]
    assert [answer["type"] for answer in answers[:100]] == ["error"] * 100
    assert answers[100] == {"type": "pong"}

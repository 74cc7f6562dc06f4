"""The Engine.IO heartbeat: one sweep of the gateway pings every Socket.IO session."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from relay.server.settings import Settings
from tests.helpers import serving

INTERVAL = 0.2


@pytest.fixture
async def base(redis_url: str) -> AsyncIterator[str]:
    settings = Settings(
        redis_url=redis_url, socketio_ping_interval=INTERVAL, socketio_ping_timeout=INTERVAL
    )
    async with serving(settings) as url:
        yield url


async def connected(http: aiohttp.ClientSession, base: str) -> aiohttp.ClientWebSocketResponse:
    """A Socket.IO connection to ``/`` over a WebSocket, its CONNECT answered."""
    ws = await http.ws_connect(f"{base}/socket.io/?EIO=4&transport=websocket")
    assert (await ws.receive_str(timeout=10)).startswith("0{")
    await ws.send_str("40")
    while not (await ws.receive_str(timeout=10)).startswith("40"):
        pass  # a ping may come first
    return ws


async def next_ping(ws: aiohttp.ClientWebSocketResponse) -> None:
    while (await ws.receive_str(timeout=10)) != "2":
        pass  # the subscribed events of the default subscription


async def test_a_session_that_answers_pings_keeps_being_pinged(
    base: str, http: aiohttp.ClientSession
) -> None:
    ws = await connected(http, base)
    try:
        for _ in range(4):
            await next_ping(ws)
            await ws.send_str("3")
        assert not ws.closed
    finally:
        await ws.close()


async def test_a_session_that_answers_no_ping_is_ended(
    base: str, http: aiohttp.ClientSession
) -> None:
    ws = await connected(http, base)
    try:
        await next_ping(ws)
        async with asyncio.timeout(10):
            while (message := await ws.receive()).type is aiohttp.WSMsgType.TEXT:
                pass  # no pong: more pings may come before the end
        assert message.type is aiohttp.WSMsgType.CLOSE
    finally:
        await ws.close()

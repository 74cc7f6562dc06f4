"""The WebSocket heartbeat: one sweep of the gateway pings every connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from relay.server.settings import Settings
from tests.helpers import StalledClient, receive, serving, subscribe

HEARTBEAT = 0.2


@pytest.fixture
async def base(redis_url: str) -> AsyncIterator[str]:
    async with serving(Settings(redis_url=redis_url, ws_heartbeat=HEARTBEAT)) as url:
        yield url


async def test_a_client_that_answers_pings_keeps_being_pinged_and_stays_connected(
    base: str, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(f"{base}/ws", autoping=False) as ws:
        await subscribe(ws, workflow_type="map")
        # Each ping is answered; the gateway would have closed the connection
        # at the ping after an unanswered one.
        for _ in range(4):
            message = await ws.receive(timeout=10)
            assert message.type is aiohttp.WSMsgType.PING
            await ws.pong(message.data)
        await ws.send_json({"action": "ping"})
        assert await receive(ws) == {"type": "pong"}
        assert not ws.closed


async def test_a_client_that_answers_no_ping_is_closed(base: str) -> None:
    # The raw client blocks while it connects: off the loop that serves the gateway.
    client = await asyncio.to_thread(StalledClient, int(base.rsplit(":", 1)[1]), "/ws")
    try:
        # A raw socket answers nothing: a ping, then the close at the next beat.
        frames, code = await asyncio.to_thread(client.read_frames, lambda _: False, timeout=10)
    finally:
        client.close()
    assert frames == []
    assert code == 1001


async def test_the_gateway_answers_a_client_ping(base: str, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(f"{base}/ws", autoping=False) as ws:
        await ws.ping(b"are you there")
        while (message := await ws.receive(timeout=10)).type is aiohttp.WSMsgType.PING:
            await ws.pong(message.data)
        assert message.type is aiohttp.WSMsgType.PONG
        assert message.data == b"are you there"

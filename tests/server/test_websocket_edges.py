"""Hostile and unlucky WebSocket clients: floods, narrower tokens, racing a close."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from relay.client.reporters import Reporter
from relay.server.auth import mint_token
from relay.server.rate_limits import FloodWindow
from relay.server.settings import Settings
from tests.helpers import (
    Gateway,
    StalledClient,
    event,
    receive,
    receive_events,
    serving,
    subscribe,
    wait_until,
)

SECRET = "ws-edges-secret-with-enough-length-x"


def masked_text_frame(payload: bytes) -> bytes:
    """One client-to-server text frame (clients must mask; payload under 126 bytes)."""
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


def test_dropped_frames_count_over_the_window_whatever_gets_through_between() -> None:
    window = FloodWindow(5.0)
    assert [window.drop(now=100.0 + i * 0.01) for i in range(3)] == [1, 2, 3]
    # Nothing here resets the count before the window has passed...
    assert window.drop(now=104.9) == 4
    # ...and then a new window opens, which is when the client hears of it again.
    assert window.drop(now=105.0) == 1
    assert window.drop(now=105.1) == 2


async def test_a_sustained_flood_is_closed_while_another_client_gets_its_events(
    start_gateway: Callable[..., Gateway], redis_url: str, http: aiohttp.ClientSession
) -> None:
    # 100 frames a second: the bucket lets one frame through every 10 ms, so a
    # flood of about 2,000 a second never has more than some 20 frames dropped
    # in a row, while it sends far more than twice its allowance.
    gateway = start_gateway(redis_url, RELAY_WS_RATE="100", RELAY_WS_BURST="20")
    async with http.ws_connect(gateway.ws_url) as calm:
        await subscribe(calm, workflow_type="map")
        flood = StalledClient(gateway.port, "/ws")
        chunk = masked_text_frame(b'{"action":"ping"}') * 10
        stop = threading.Event()

        def pour() -> None:
            try:
                while not stop.is_set():
                    flood.sock.sendall(chunk)
                    time.sleep(0.005)  # pacing the flood, not waiting for anything
            except OSError:
                pass  # the gateway closed the connection

        pourer = threading.Thread(target=pour, daemon=True)
        pourer.start()
        try:
            async with http.post(f"{gateway.url}/api/workflows/progress", json=event()) as r:
                wanted = (await r.json())["id"]
            assert [f["id"] for f in await receive_events(calm, 1)] == [wanted]
            frames, code = await asyncio.to_thread(flood.read_frames, lambda _: False, timeout=20)
        finally:
            stop.set()
            pourer.join(timeout=10)
            flood.close()
        assert code == 1008
        errors = Counter(frame.get("code") for frame in frames if frame.get("type") == "error")
        # One error per window, not one per frame let through in between.
        assert errors == Counter({"rate_limited": 1})
        await calm.send_json({"action": "ping"})
        assert await receive(calm) == {"type": "pong"}


@pytest.fixture
async def secured(redis_url: str) -> AsyncIterator[str]:
    async with serving(
        Settings(redis_url=redis_url, read_block_ms=100, token_secret=SECRET)
    ) as url:
        yield url


def token(**grant: Any) -> str:
    return mint_token(SECRET, "alice", **grant)


async def test_a_narrower_token_drops_the_subscriptions_it_does_not_cover(
    secured: str, redis_url: str, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(f"{secured}/ws?token={token(workflow_types=['*'])}") as ws:
        await subscribe(ws, workflow_type="map")
        await subscribe(ws, workflow_type="character")
        await subscribe(ws, workflow_type="*", session_id="s1")
        await ws.send_json({"action": "auth", "token": token(sessions=["s1"])})
        dropped = []
        answer = await receive(ws)
        while answer["type"] == "unsubscribed":
            dropped.append((answer["workflow_type"], answer["session_id"]))
            answer = await receive(ws)
        assert answer == {"type": "authenticated", "sub": "alice"}
        assert sorted(dropped) == [("character", None), ("map", None)]
        with Reporter(redis_url) as reporter:
            reporter.report("other", "map", "analyzing", 10)
            reporter.report("other", "character", "portrait", 10)
            kept = reporter.report("s1", "map", "analyzing", 20)
        # Events of one type arrive in stream order: had "other" been sent, it came first.
        assert [frame["id"] for frame in await receive_events(ws, 1)] == [kept]
        await ws.send_json({"action": "subscribe", "workflow_type": "map"})
        assert (await receive(ws))["code"] == "forbidden"


async def test_a_broader_token_keeps_every_subscription(
    secured: str, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(f"{secured}/ws?token={token(workflow_types=['map'])}") as ws:
        await subscribe(ws, workflow_type="map")
        await ws.send_json({"action": "auth", "token": token(workflow_types=["*"])})
        assert await receive(ws) == {"type": "authenticated", "sub": "alice"}
        await ws.send_json({"action": "unsubscribe", "workflow_type": "map"})
        assert (await receive(ws))["type"] == "unsubscribed"


async def close_code_after(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    message = await ws.receive(timeout=10)
    while message.type is aiohttp.WSMsgType.TEXT:
        message = await ws.receive(timeout=10)
    return ws.close_code


async def test_the_token_close_code_wins_over_a_frame_sent_at_once(
    start_gateway: Callable[..., Gateway], redis_url: str, http: aiohttp.ClientSession
) -> None:
    gateway = start_gateway(redis_url, RELAY_TOKEN_SECRET=SECRET)
    expired = token(workflow_types=["*"], ttl_seconds=-60)
    codes: Counter[int | None] = Counter()
    for _ in range(150):
        async with http.ws_connect(f"{gateway.ws_url}?token={expired}") as ws:
            await ws.send_json({"action": "subscribe", "workflow_type": "map"})
            codes[await close_code_after(ws)] += 1
        async with http.ws_connect(gateway.ws_url) as ws:
            await ws.send_json({"action": "auth", "token": expired})
            await ws.send_json({"action": "ping"})
            codes[await close_code_after(ws)] += 1
    assert codes == Counter({4002: 300})
    # Each close finished its handshake (the client's close frame came back)
    # before the gateway let go of the connection, rather than being cut short.
    wait_until(
        lambda: gateway.logs().count("disconnected (close code 1000)") == 300,
        what="every close handshake to complete",
    )


def test_the_close_code_reaches_a_client_that_keeps_sending(
    start_gateway: Callable[..., Gateway], redis_url: str
) -> None:
    gateway = start_gateway(redis_url, RELAY_TOKEN_SECRET=SECRET)
    expired = token(workflow_types=["*"], ttl_seconds=-60)
    frame = masked_text_frame(b'{"action":"ping"}')
    codes: Counter[int | None] = Counter()
    for _ in range(50):
        client = StalledClient(gateway.port, f"/ws?token={expired}")
        try:
            # Frames right behind the upgrade, before the close has gone out.
            client.sock.sendall(frame * 20)
            _, code = client.read_frames(lambda _: False, timeout=10)
        finally:
            client.close()
        codes[code] += 1
    assert codes == Counter({4002: 50})

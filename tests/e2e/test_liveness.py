"""Two ``relay serve`` processes on one Redis: a silent session is stalled once, a finished one
completed once, and every subscriber of either gateway hears of it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp

from tests.conftest import RedisServer
from tests.helpers import Gateway, event, receive_events, state_when, subscribe

STALL = {"RELAY_STALL_AFTER": "0.5", "RELAY_READ_BLOCK_MS": "50"}


async def publish(http: aiohttp.ClientSession, gateway: Gateway, **fields: Any) -> str:
    async with http.post(f"{gateway.url}/api/workflows/progress", json=event(**fields)) as resp:
        assert resp.status == 202, gateway.logs()
        return str((await resp.json())["id"])


async def test_two_gateways_stall_a_silent_session_once_and_infer_a_finished_one_once(
    start_gateway: Callable[..., Gateway],
    redis_url: str,
    redis_server: RedisServer,
    http: aiohttp.ClientSession,
) -> None:
    gateways = [start_gateway(redis_url, **STALL) for _ in range(2)]
    sockets = [await http.ws_connect(g.ws_url) for g in gateways]
    try:
        for ws in sockets:
            await subscribe(ws, workflow_type="map")
        await publish(http, gateways[0], session_id="quiet", progress=45)
        await publish(http, gateways[1], session_id="done", progress=100)
        for gateway in gateways:
            await state_when(http, gateway.url, "quiet", status="stalled")
            done = await state_when(http, gateway.url, "done", status="completed")
            assert done["metadata"] == {"details": "forests", "inferred": True}
        for ws in sockets:
            frames = await receive_events(ws, 4)
            seen = sorted((f["data"]["session_id"], f["data"]["status"]) for f in frames)
            assert seen == [
                ("done", "completed"),
                ("done", "running"),
                ("quiet", "running"),
                ("quiet", "stalled"),
            ]
        # The worker reports again: running, on both gateways and both sockets.
        back = await publish(http, gateways[1], session_id="quiet", progress=46)
        for gateway in gateways:
            await state_when(http, gateway.url, "quiet", status="running", progress=46)
        for ws in sockets:
            [frame] = await receive_events(ws, 1)
            assert frame["id"] == back
        with redis_server.client() as client:
            entries = client.xrange("workflow:progress:map")
        statuses = [(f["session_id"], f["status"]) for _, f in entries]
        assert statuses.count(("quiet", "stalled")) == 1
        assert statuses.count(("done", "completed")) == 1
        # Between them the gateways say they wrote one of each.
        written: dict[str, float] = {}
        for gateway in gateways:
            async with http.get(f"{gateway.url}/metrics") as response:
                text = await response.text()
            for line in text.splitlines():
                if line.startswith("relay_liveness_events_total{"):
                    status = line.split('"')[1]
                    written[status] = written.get(status, 0) + float(line.split()[-1])
        assert written == {"stalled": 1, "completed": 1}
    finally:
        for ws in sockets:
            await ws.close()

"""A snapshot larger than the outbox limit reaches WebSocket and SSE subscribers whole."""

from __future__ import annotations

import aiohttp
import orjson

from relay.server.settings import Settings
from tests.helpers import event, receive_events, serving, subscribe
from tests.server.test_catchup import post
from tests.server.test_delivery_once import publish_batch
from tests.server.test_sse import next_event, read_message

RUNNING = 6_000
OUTBOX_LIMIT = 5_000  # the default; the snapshot alone is larger


async def test_a_snapshot_above_the_outbox_limit_is_sent_in_full(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    settings = Settings(redis_url=redis_url, read_block_ms=100, outbox_limit=OUTBOX_LIMIT)
    async with serving(settings) as base:
        ids: list[str] = []
        for start in range(0, RUNNING, 1_000):
            batch = [
                event(session_id=f"run-{n}", progress=n % 100) for n in range(start, start + 1_000)
            ]
            ids += await publish_batch(http, base, batch)
        url = f"{base}/api/workflows/events?workflow_type=map&snapshot=true"
        async with http.ws_connect(f"{base}/ws") as ws, http.get(url) as stream:
            await subscribe(ws, workflow_type="map", snapshot=True)
            assert (await read_message(stream))["retry"]
            assert (await read_message(stream))["event"] == "subscribed"
            by_ws = [f["id"] for f in await receive_events(ws, RUNNING, timeout=60)]
            by_sse = [(await next_event(stream))["id"] for _ in range(RUNNING)]
            assert sorted(by_ws) == sorted(ids)
            assert sorted(by_sse) == sorted(ids)
            # Both still open and live: the next event is the new one.
            live = await post(http, base, session_id="run-0", progress=99)
            assert [f["id"] for f in await receive_events(ws, 1)] == [live]
            message = await next_event(stream)
            assert message["id"] == live
            assert orjson.loads(message["data"])["progress"] == 99
            assert not ws.closed

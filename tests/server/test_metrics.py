"""``/metrics`` reports what the gateway did, in Prometheus text."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from relay.server.settings import Settings
from tests.conftest import RedisServer
from tests.helpers import event, receive_events, serving, subscribe


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_counts_after_known_traffic(redis_url: str, http: aiohttp.ClientSession) -> None:
    settings = Settings(redis_url=redis_url, read_block_ms=100)
    async with serving(settings) as base, http.ws_connect(f"{base}/ws") as ws:
        await subscribe(ws, workflow_type="map")
        for n in range(3):
            async with http.post(f"{base}/api/workflows/progress", json=event(progress=n)):
                pass
        async with http.post(f"{base}/api/workflows/progress", json={"bad": 1}) as response:
            assert response.status == 422
        await receive_events(ws, 3)
        async with http.get(f"{base}/metrics") as response:
            assert response.status == 200
            assert response.content_type == "text/plain"
            found = samples(await response.text())
    assert found[("relay_events_published_total", (("workflow_type", "map"),))] == 3
    assert found[("relay_events_read_total", (("workflow_type", "map"),))] == 3
    assert found[("relay_events_delivered_total", (("workflow_type", "map"),))] == 3
    assert found[("relay_requests_rejected_total", (("reason", "validation_failed"),))] == 1
    assert found[("relay_subscribers", ())] == 1
    assert found[("relay_sessions", ())] == 1
    assert found[("relay_reader_ready", ())] == 1
    assert found[("relay_invalid_entries_total", ())] == 0


async def test_an_invalid_entry_is_counted_once_however_often_history_is_read(
    redis_url: str, redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    settings = Settings(redis_url=redis_url, read_block_ms=100)
    async with serving(settings) as base, http.ws_connect(f"{base}/ws") as ws:
        await subscribe(ws, workflow_type="map")
        async with http.post(f"{base}/api/workflows/progress", json=event()) as response:
            first = (await response.json())["id"]
        with redis_server.client() as raw:
            raw.xadd("workflow:progress:map", {"session_id": "s1", "step": "a", "progress": "x"})
        async with http.post(f"{base}/api/workflows/progress", json=event()) as response:
            last = (await response.json())["id"]
        assert [f["id"] for f in await receive_events(ws, 2)] == [first, last]
        for _ in range(2):
            async with http.get(f"{base}/api/workflows/sessions/s1/events") as response:
                assert [e["id"] for e in await response.json()] == [first, last]
        async with http.ws_connect(f"{base}/ws") as resumed:
            await subscribe(resumed, workflow_type="map", since=first)
            assert [f["id"] for f in await receive_events(resumed, 1)] == [last]
        async with http.get(f"{base}/metrics") as response:
            found = samples(await response.text())
    assert found[("relay_invalid_entries_total", ())] == 1

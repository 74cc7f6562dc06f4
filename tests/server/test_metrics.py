"""``/metrics`` reports what the gateway did, in Prometheus text."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from relay.server.settings import Settings
from tests.conftest import RedisServer, free_port
from tests.helpers import Gateway, event, receive_events, serving, subscribe


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
        async with http.post(f"{base}/api/workflows/progress", json=event(progress=50)) as response:
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


METRICS_TOKEN = "metrics-token-1"
NO_TOKEN = "the metrics token is required: Authorization: Bearer <token>"
WRONG_TOKEN = "the metrics token is not valid"


async def get(
    http: aiohttp.ClientSession, url: str, token: str | None = None
) -> tuple[int, dict[str, str], str]:
    """Status, headers and body of a GET, with ``token`` as a bearer credential when given."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with http.get(url, headers=headers) as response:
        return response.status, dict(response.headers), await response.text()


async def check_token_guard(http: aiohttp.ClientSession, url: str) -> None:
    """``url`` answers metrics to the metrics token only, and 401 as a JSON error otherwise."""
    for token, message in ((None, NO_TOKEN), ("x" + METRICS_TOKEN, WRONG_TOKEN)):
        status, headers, body = await get(http, url, token)
        assert status == 401
        assert headers["WWW-Authenticate"] == "Bearer"
        assert orjson.loads(body) == {"error": "unauthorized", "message": message, "detail": []}
    status, headers, body = await get(http, url, METRICS_TOKEN)
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    assert ("relay_reader_ready", ()) in samples(body)


async def test_a_metrics_port_serves_metrics_and_the_main_port_not(
    start_gateway: Callable[..., Gateway], redis_url: str, http: aiohttp.ClientSession
) -> None:
    metrics_port = free_port()
    gateway = start_gateway(
        redis_url, flags=("--metrics-port", str(metrics_port)), RELAY_METRICS_TOKEN=METRICS_TOKEN
    )
    apart = f"http://127.0.0.1:{metrics_port}"
    status, _, body = await get(http, f"{gateway.url}/metrics", METRICS_TOKEN)
    assert status == 404
    assert orjson.loads(body)["error"] == "not_found"
    await check_token_guard(http, f"{apart}/metrics")
    # The metrics port serves nothing else, and the main port all else.
    assert (await get(http, f"{apart}/healthz"))[0] == 404
    assert (await get(http, f"{gateway.url}/healthz"))[0] == 200
    assert f"metrics on http://127.0.0.1:{metrics_port}/metrics" in gateway.logs()


async def test_a_metrics_token_guards_metrics_on_the_main_port(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    settings = Settings(redis_url=redis_url, metrics_token=METRICS_TOKEN)
    async with serving(settings) as base:
        await check_token_guard(http, f"{base}/metrics")
        assert (await get(http, f"{base}/healthz"))[0] == 200


def test_the_metrics_port_must_differ_from_the_main_one() -> None:
    with pytest.raises(ValidationError, match=r"metrics_port must differ from port \(9000\)"):
        Settings(port=9000, metrics_port=9000)
    assert Settings(port=0, metrics_port=0).metrics_port == 0

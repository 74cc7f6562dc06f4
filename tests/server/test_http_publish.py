"""Publishing over HTTP against a real Redis: answers, errors, and what reaches the stream."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
import redis

from relay.server.settings import Settings
from tests.conftest import RedisServer
from tests.helpers import event, serving, store_client

# Every test here on redis_url runs on a single Redis and on a Redis Cluster; those
# on own_redis stop or freeze a single server of their own.
pytestmark = pytest.mark.stores


@pytest.fixture
async def base(redis_url: str) -> AsyncIterator[str]:
    async with serving(Settings(redis_url=redis_url, max_batch=50)) as url:
        yield url


async def test_publish_answers_id_and_event_name(
    base: str, http: aiohttp.ClientSession, redis_url: str
) -> None:
    async with http.post(f"{base}/api/workflows/progress", json=event()) as response:
        assert response.status == 202
        answer = await response.json()
    assert answer["event"] == "workflow:progress:map"
    with store_client(redis_url) as client:
        [(entry_id, fields)] = client.xrange("workflow:progress:map")
    assert entry_id == answer["id"]
    assert fields["session_id"] == "s1"
    assert orjson.loads(fields["metadata"]) == {"details": "forests"}


async def test_batch_is_all_or_none(base: str, http: aiohttp.ClientSession, redis_url: str) -> None:
    batch = [
        event(session_id=f"s{n}", workflow_type="map" if n % 2 else "character") for n in range(10)
    ]
    async with http.post(f"{base}/api/workflows/progress/batch", json=batch) as response:
        assert response.status == 202
        ids = (await response.json())["ids"]
    assert len(ids) == 10
    bad = [event(), event(progress=-1)]
    async with http.post(f"{base}/api/workflows/progress/batch", json=bad) as response:
        assert response.status == 422
        answer = await response.json()
    assert answer["detail"][0]["field"] == "1.progress"
    with store_client(redis_url) as client:
        assert (
            client.xlen("workflow:progress:map") + client.xlen("workflow:progress:character") == 10
        )


async def test_batch_longer_than_the_limit_is_413(base: str, http: aiohttp.ClientSession) -> None:
    batch = [event() for _ in range(51)]
    async with http.post(f"{base}/api/workflows/progress/batch", json=batch) as response:
        assert response.status == 413
        assert (await response.json())["error"] == "too_large"


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"{not json", {"content-type": "application/json"}, 400, "malformed_json"),
        (b"", {"content-type": "application/json"}, 400, "malformed_json"),
        (b"\xff\xfe{}", {"content-type": "application/json"}, 400, "malformed_json"),
        (orjson.dumps(event()), {"content-type": "text/plain"}, 415, "unsupported_media_type"),
        (b"[1, 2]", {"content-type": "application/json"}, 422, "validation_failed"),
        (
            orjson.dumps(event(progress="45")),
            {"content-type": "application/json"},
            422,
            "validation_failed",
        ),
        (
            orjson.dumps(event(extra=1)),
            {"content-type": "application/json"},
            422,
            "validation_failed",
        ),
        (b'{"progress": NaN}', {"content-type": "application/json"}, 400, "malformed_json"),
        (b"x" * 2_000_000, {"content-type": "application/json"}, 413, "too_large"),
    ],
)
async def test_bad_input_gets_a_json_error(
    base: str,
    http: aiohttp.ClientSession,
    body: bytes,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    async with http.post(f"{base}/api/workflows/progress", data=body, headers=headers) as response:
        assert response.status == status
        answer = await response.json()
    assert answer["error"] == code
    assert answer["message"]
    assert "Traceback" not in answer["message"]
    async with http.post(f"{base}/api/workflows/progress", json=event()) as response:
        assert response.status == 202  # and the next good request is unaffected


async def test_validation_error_names_every_bad_field(
    base: str, http: aiohttp.ClientSession
) -> None:
    body = event(session_id="bad id", progress=101)
    del body["step"]
    async with http.post(f"{base}/api/workflows/progress", json=body) as response:
        assert response.status == 422
        answer = await response.json()
    assert {item["field"] for item in answer["detail"]} == {"session_id", "progress", "step"}


async def test_unknown_path_and_method_are_json(base: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{base}/nope") as response:
        assert response.status == 404
        assert (await response.json())["error"] == "not_found"
    async with http.get(f"{base}/api/workflows/progress") as response:
        assert response.status == 405
        assert (await response.json())["error"] == "method_not_allowed"


async def test_health_and_readiness(base: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{base}/healthz") as response:
        assert response.status == 200
    async with http.get(f"{base}/readyz") as response:
        assert response.status == 200
        assert (await response.json())["embedded"] is False


async def test_redis_down_gives_503_with_retry_after(
    own_redis: RedisServer, http: aiohttp.ClientSession
) -> None:
    async with serving(Settings(redis_url=own_redis.url)) as url:
        own_redis.stop()
        async with http.post(f"{url}/api/workflows/progress", json=event()) as response:
            assert response.status == 503
            assert response.headers["Retry-After"] == "1"
            assert (await response.json())["error"] == "unavailable"
        async with http.get(f"{url}/readyz") as response:
            assert response.status == 503
        own_redis.start()
        async with http.post(f"{url}/api/workflows/progress", json=event()) as response:
            assert response.status == 202
        with redis.Redis(port=own_redis.port) as client:
            assert client.xlen("workflow:progress:map") == 1


async def test_answers_keep_their_exact_bytes(base: str, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{base}/api/workflows/progress", json=event()) as response:
        raw = await response.read()
    entry_id = orjson.loads(raw)["id"]
    assert raw == (
        b'{"id":"' + entry_id.encode() + b'","event":"workflow:progress:map",'
        b'"cancel_requested":false}'
    )
    async with http.post(f"{base}/api/workflows/progress/batch", json=[event()]) as response:
        raw = await response.read()
    [entry_id] = orjson.loads(raw)["ids"]
    assert raw == b'{"ids":["' + entry_id.encode() + b'"],"cancel_requested":[]}'
    async with http.post(f"{base}/api/workflows/progress", json=event(progress=-1)) as response:
        raw = await response.read()
    assert raw == (
        b'{"error":"validation_failed","message":"invalid fields: progress","detail":'
        b'[{"field":"progress","message":"Input should be greater than or equal to 0"}]}'
    )
    async with http.get(f"{base}/healthz") as response:
        assert await response.read() == b'{"status":"ok"}'


@pytest.mark.parametrize("size", [2_047, 2_048, 2_049, 9_000])
async def test_a_body_over_the_limit_is_413_however_it_arrives(
    redis_url: str, http: aiohttp.ClientSession, size: int
) -> None:
    # A small body arrives with its headers, and is taken whole; a large one
    # is read as it comes. Either way the limit is the same.
    padding = "x" * (size - len(orjson.dumps(event(metadata={"p": ""}))))
    body = orjson.dumps(event(metadata={"p": padding}))
    assert len(body) == size
    headers = {"content-type": "application/json"}
    settings = Settings(redis_url=redis_url, max_body_bytes=2_048)
    async with (
        serving(settings) as url,
        http.post(f"{url}/api/workflows/progress", data=body, headers=headers) as response,
    ):
        assert response.status == (202 if size <= 2_048 else 413)
        if size > 2_048:
            assert (await response.json())["error"] == "too_large"

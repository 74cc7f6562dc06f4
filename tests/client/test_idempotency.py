"""Idempotent publishing: a retry under the same key answers the first ids and writes nothing."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import pytest
import redis
import redis.asyncio

from relay.client.reporters import CLIENT_OPTIONS, AsyncReporter, HttpReporter, Reporter
from relay.client.retry import RetryPolicy
from relay.protocol.event import ProgressEvent
from relay.protocol.idempotency import fingerprint
from relay.protocol.keys import Keys
from relay.server.settings import Settings
from tests.conftest import RedisServer
from tests.helpers import Gateway, event, eventually, serving, store_client, wait_until

# Every test here on redis_url runs on a single Redis and on a Redis Cluster; those
# on own_redis stop or freeze a single server of their own.
pytestmark = pytest.mark.stores

STREAM = "workflow:progress:map"
PATIENT = RetryPolicy(retry_for=30)
KEYS = Keys()


@pytest.fixture
async def base(redis_url: str) -> AsyncIterator[str]:
    async with serving(Settings(redis_url=redis_url, read_block_ms=100)) as url:
        yield url


def length(redis_url: str) -> int:
    with store_client(redis_url) as client:
        return int(client.xlen(STREAM))


async def post(
    http: aiohttp.ClientSession, url: str, body: Any, key: str | None = None
) -> tuple[int, Any, dict[str, str]]:
    headers = {"Idempotency-Key": key} if key is not None else {}
    async with http.post(url, json=body, headers=headers) as response:
        return response.status, await response.json(), dict(response.headers)


async def test_a_repeated_single_publish_answers_the_first_id(
    base: str, redis_url: str, http: aiohttp.ClientSession
) -> None:
    url = f"{base}/api/workflows/progress"
    status, first, headers = await post(http, url, event(), key="order-1")
    assert status == 202
    assert "Idempotent-Replayed" not in headers
    status, again, headers = await post(http, url, event(ts=12345), key="order-1")
    assert status == 202
    assert again == first  # a new ts is still the same publication
    assert headers["Idempotent-Replayed"] == "true"
    assert length(redis_url) == 1


async def test_a_repeated_batch_answers_the_first_ids(
    base: str, redis_url: str, http: aiohttp.ClientSession
) -> None:
    url = f"{base}/api/workflows/progress/batch"
    batch = [event(f"s{n}", progress=n) for n in range(50)]
    status, first, _ = await post(http, url, batch, key="batch-1")
    assert status == 202
    for _ in range(3):
        status, again, headers = await post(http, url, batch, key="batch-1")
        assert (status, again) == (202, first)
        assert headers["Idempotent-Replayed"] == "true"
    assert length(redis_url) == 50
    status, other, _ = await post(http, url, batch, key="batch-2")
    assert status == 202
    assert set(other["ids"]).isdisjoint(first["ids"])
    assert length(redis_url) == 100


async def test_a_key_reused_for_other_events_is_refused(
    base: str, redis_url: str, http: aiohttp.ClientSession
) -> None:
    url = f"{base}/api/workflows/progress"
    await post(http, url, event(progress=10), key="k")
    status, answer, _ = await post(http, url, event(progress=11), key="k")
    assert status == 409
    assert answer["error"] == "idempotency_key_reused"
    status, answer, _ = await post(http, f"{url}/batch", [event(progress=10)] * 2, key="k")
    assert (status, answer["error"]) == (409, "idempotency_key_reused")
    assert length(redis_url) == 1


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "caf\u00e9"])
async def test_a_malformed_key_is_refused_before_anything_is_written(
    base: str, redis_url: str, http: aiohttp.ClientSession, key: str
) -> None:
    headers = {"Idempotency-Key": key.encode().decode("latin-1")}
    for path, body in (("", event()), ("/batch", [event()])):
        async with http.post(
            f"{base}/api/workflows/progress{path}", json=body, headers=headers
        ) as response:
            assert response.status == 422
            answer = await response.json()
        assert answer["detail"][0]["field"] == "Idempotency-Key"
    assert length(redis_url) == 0


async def test_the_record_lives_for_the_configured_window(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    async with serving(Settings(redis_url=redis_url, idempotency_ttl=60)) as url:
        await post(http, f"{url}/api/workflows/progress", event(), key="windowed")
    with store_client(redis_url) as client:
        assert 0 < client.ttl(KEYS.idempotency(STREAM, "windowed")) <= 60


async def test_retrying_the_publish_that_ended_a_session_is_no_conflict(
    base: str, redis_url: str, http: aiohttp.ClientSession
) -> None:
    url = f"{base}/api/workflows/progress"
    done = event(progress=100, status="completed")
    status, first, _ = await post(http, url, done, key="the-end")
    assert status == 202
    status, again, _ = await post(http, url, done, key="the-end")
    assert (status, again) == (202, first)
    status, _, _ = await post(http, url, done, key="another-end")
    assert status == 409
    assert length(redis_url) == 1


async def test_concurrent_publishes_under_one_key_write_once(
    start_gateway: Callable[..., Gateway],
    redis_url: str,
    http: aiohttp.ClientSession,
) -> None:
    gateways = [start_gateway(redis_url), start_gateway(redis_url)]
    batch = [event(f"c{n}") for n in range(20)]
    answers = await asyncio.gather(
        *(
            post(http, f"{gateways[n % 2].url}/api/workflows/progress/batch", batch, key="race")
            for n in range(40)
        )
    )
    assert {status for status, _, _ in answers} == {202}
    assert len({tuple(answer["ids"]) for _, answer, _ in answers}) == 1
    assert length(redis_url) == 20


@contextmanager
def stopped(server: RedisServer) -> Iterator[Callable[[], None]]:
    """Redis frozen by SIGSTOP: it accepts connections and reads nothing until resumed."""
    assert server.process is not None
    process = server.process
    process.send_signal(signal.SIGSTOP)
    try:
        yield lambda: process.send_signal(signal.SIGCONT)
    finally:
        process.send_signal(signal.SIGCONT)


def retried(caplog: pytest.LogCaptureFixture, times: int) -> Callable[[], bool]:
    """Whether a reporter has sent the same report ``times`` more times."""
    return lambda: caplog.text.count("report not delivered") >= times


def in_thread(work: Callable[[], str]) -> tuple[threading.Thread, list[str]]:
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(work()))
    thread.start()
    return thread, result


def test_reporter_retries_through_a_stalled_redis_and_writes_once(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="relay.client.retry")
    client = redis.Redis.from_url(own_redis.url, **{**CLIENT_OPTIONS, "socket_timeout": 0.3})
    with Reporter(client=client, retry=PATIENT) as reporter:
        warm = reporter.report("s1", "map", "warm", 1)  # the script is loaded now
        with stopped(own_redis) as resume:
            thread, result = in_thread(lambda: reporter.report("s1", "map", "step", 5))
            # Each try timed out, but Redis holds the first to run once resumed.
            wait_until(retried(caplog, 2), what="two retries")
            resume()
            thread.join(timeout=30)
    with own_redis.client() as raw:
        entries = raw.xrange(STREAM)
    assert [entry_id for entry_id, _ in entries] == [warm, *result]


async def test_async_reporter_retries_through_a_stalled_redis_and_writes_once(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="relay.client.retry")
    options = {**CLIENT_OPTIONS, "socket_timeout": 0.3}
    client = redis.asyncio.Redis.from_url(own_redis.url, **options)
    async with AsyncReporter(client=client, retry=PATIENT) as reporter:
        warm = await reporter.report("s0", "map", "warm", 1)  # the script is loaded now
        with stopped(own_redis) as resume:
            reports = [
                asyncio.create_task(reporter.report(f"s{n}", "map", "step", n)) for n in range(5)
            ]
            await eventually(retried(caplog, 2), what="two retries")
            resume()
            ids = await asyncio.gather(*reports)
    with own_redis.client() as raw:
        entries = raw.xrange(STREAM)
    assert [entry_id for entry_id, _ in entries] == [warm, *ids]


async def test_http_reporter_retries_through_a_stalled_redis_and_writes_once(
    start_gateway: Callable[..., Gateway],
    own_redis: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="relay.client.retry")
    gateway = start_gateway(own_redis.url)
    reporter = HttpReporter(gateway.url, timeout=0.3, retry=PATIENT)
    with stopped(own_redis) as resume:
        thread, result = in_thread(lambda: reporter.report("s1", "map", "step", 5))
        await asyncio.to_thread(wait_until, retried(caplog, 2), what="two retries")
        resume()
        await asyncio.to_thread(thread.join, 30)
    with own_redis.client() as raw:
        entries = raw.xrange(STREAM)
    assert [entry_id for entry_id, _ in entries] == result


async def test_the_api_document_names_the_header(base: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{base}/openapi.json") as response:
        paths = (await response.json())["paths"]
    for path in ("/api/workflows/progress", "/api/workflows/progress/batch"):
        operation = paths[path]["post"]
        assert [p["name"] for p in operation["parameters"]] == ["Idempotency-Key"]
        assert "Idempotent-Replayed" in operation["responses"]["202"]["headers"]


@pytest.mark.parametrize("record", ["garbage", "{fp} not-an-id", "{fp} 1-0 2-0", "{fp}"])
async def test_a_record_someone_else_wrote_is_not_trusted(
    base: str, redis_url: str, http: aiohttp.ClientSession, record: str
) -> None:
    body = event()
    stored = record.format(fp=fingerprint([ProgressEvent.model_validate(body)]))
    with store_client(redis_url) as client:
        client.set(KEYS.idempotency(STREAM, "planted"), stored)
        client.hset(KEYS.idempotency(STREAM, "a-hash"), "f", "v")
    for key in ("planted", "a-hash"):
        status, answer, _ = await post(http, f"{base}/api/workflows/progress", body, key=key)
        assert (status, answer["error"]) == (409, "idempotency_key_reused")
    assert length(redis_url) == 0

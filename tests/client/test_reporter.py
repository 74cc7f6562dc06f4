"""Python reporters: same checks, same stream entry, whichever path publishes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from pydantic import ValidationError

from relay.client.reporters import AsyncReporter, HttpReporter, Reporter
from relay.client.retry import ReportError, RetryPolicy
from relay.server.settings import Settings
from tests.conftest import RedisServer
from tests.helpers import receive_events, serving, store_client, subscribe

# Every test here on redis_url runs on a single Redis and on a Redis Cluster; those
# on own_redis stop or freeze a single server of their own.
pytestmark = pytest.mark.stores

ARGS = ("s1", "map", "analyzing", 45, {"details": "forests"})
QUICK = RetryPolicy(retry_for=0.3, buffer_size=10)


def entry(redis_url: str, entry_id: str) -> dict[str, str]:
    with store_client(redis_url) as client:
        [(found, fields)] = client.xrange("workflow:progress:map", entry_id, entry_id)
    assert found == entry_id
    return dict(fields)


def same_shape(fields: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in fields.items() if k != "ts"}


@pytest.fixture
async def base(redis_url: str) -> AsyncIterator[str]:
    async with serving(Settings(redis_url=redis_url, read_block_ms=100)) as url:
        yield url


async def test_every_path_writes_the_same_entry(
    base: str, redis_url: str, http: aiohttp.ClientSession
) -> None:
    with Reporter(redis_url) as sync_reporter:
        sync_id = sync_reporter.report(*ARGS)
    async with AsyncReporter(redis_url) as async_reporter:
        async_id = await async_reporter.report(*ARGS)
    http_id = await asyncio.to_thread(HttpReporter(base).report, *ARGS)
    shapes = [same_shape(entry(redis_url, i)) for i in (sync_id, async_id, http_id)]
    assert shapes[0] == shapes[1] == shapes[2]
    assert shapes[0]["metadata"] == '{"details":"forests"}'
    for entry_id in (sync_id, async_id, http_id):
        assert int(entry(redis_url, entry_id)["ts"]) > 0


async def test_reported_events_reach_subscribers(
    base: str, redis_url: str, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(f"{base}/ws") as ws:
        await subscribe(ws, workflow_type="map", session_id="s1")
        async with AsyncReporter(redis_url) as reporter:
            first = await reporter.report(*ARGS)
            last = await reporter.report("s1", "map", "done", 100, status="completed")
        frames = await receive_events(ws, 2)
    assert [f["id"] for f in frames] == [first, last]
    assert frames[1]["data"]["status"] == "completed"


def test_reporter_arguments_are_validated_like_http(redis_url: str) -> None:
    with Reporter(redis_url) as reporter:
        with pytest.raises(ValidationError, match="progress"):
            reporter.report("s1", "map", "step", 250)
        with pytest.raises(ValidationError, match="session_id"):
            reporter.report("bad id", "map", "step", 5)
        with pytest.raises(ValidationError, match="status"):
            reporter.report("s1", "map", "step", 5, status="paused")  # type: ignore[arg-type]


def test_http_reporter_reports_gateway_errors() -> None:
    with pytest.raises(ReportError, match="unreachable"):
        HttpReporter("http://127.0.0.1:9", timeout=2, retry=QUICK).report(*ARGS)


async def test_http_reporter_surfaces_error_answers(own_redis: RedisServer) -> None:
    async with serving(Settings(redis_url=own_redis.url, read_block_ms=100)) as url:
        own_redis.stop()
        with pytest.raises(ReportError, match="503"):
            await asyncio.to_thread(HttpReporter(url, retry=QUICK).report, *ARGS)
        own_redis.start()

"""Publishing that waits for replicas (``min_replicas``), against a Redis that has none.

The write happens, but fewer replicas than asked for acknowledged it: the
gateway answers 503 like any store trouble, the reporters keep retrying, and
a retry under the same key writes nothing again.
"""

from __future__ import annotations

import aiohttp
import pytest
import redis
from redis.asyncio import Redis

from relay.client.redis_urls import async_redis_client
from relay.client.reporters import AsyncReporter, Reporter
from relay.client.retry import ReportError, RetryPolicy
from relay.client.stream_publisher import StreamPublisher
from relay.protocol.entries import Publication
from relay.protocol.event import ProgressEvent
from relay.protocol.idempotency import REPLAYED_HEADER
from relay.protocol.keys import Keys
from relay.server.settings import Settings
from tests.helpers import event, serving

STREAM = Keys().stream("map")
TIMEOUT_MS = 50
# Fail at once: there is no replica to wait for.
NO_RETRY = RetryPolicy(retry_for=0, buffer_size=0)


async def test_too_few_replicas_answer_503_and_a_retry_writes_nothing_again(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    headers = {"Idempotency-Key": "replicated-1"}
    settings = Settings(redis_url=redis_url, min_replicas=1, replica_timeout_ms=TIMEOUT_MS)
    async with serving(settings) as base:
        for _ in range(2):
            url = f"{base}/api/workflows/progress"
            async with http.post(url, json=event(), headers=headers) as response:
                assert response.status == 503
                assert response.headers["Retry-After"] == "1"
                assert (await response.json())["error"] == "unavailable"
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        entries = client.xrange(STREAM)
    assert len(entries) == 1  # written once, although never acknowledged
    # Without the wait, the same key answers the write it made.
    async with serving(Settings(redis_url=redis_url)) as base:
        url = f"{base}/api/workflows/progress"
        async with http.post(url, json=event(), headers=headers) as response:
            assert response.status == 202
            assert response.headers[REPLAYED_HEADER] == "true"
            assert (await response.json())["id"] == entries[0][0]


def test_a_reporter_takes_too_few_replicas_for_a_failure_to_retry(redis_url: str) -> None:
    with (
        Reporter(
            redis_url, min_replicas=1, replica_timeout_ms=TIMEOUT_MS, retry=NO_RETRY
        ) as reporter,
        pytest.raises(ReportError, match="only 0 of 1 replica"),
    ):
        reporter.report("s1", "map", "step", 10)


async def test_an_async_reporter_takes_too_few_replicas_for_a_failure_to_retry(
    redis_url: str,
) -> None:
    async with AsyncReporter(
        redis_url, min_replicas=1, replica_timeout_ms=TIMEOUT_MS, retry=NO_RETRY
    ) as reporter:
        with pytest.raises(ReportError, match="only 0 of 1 replica"):
            await reporter.report("s1", "map", "step", 10)


async def test_a_replay_rewrites_its_record_as_it_was(redis_url: str) -> None:
    # The replay writes its record again, so that a WAIT after it covers the
    # write it replays; the record and its expiry must come out as they were.
    client = async_redis_client(redis_url, decode_responses=True)
    publisher = StreamPublisher(client, Keys(), maxlen=100)
    events = [ProgressEvent(session_id="s1", workflow_type="map", step="a", progress=1)]
    first = await publisher.publish(events, key="replayed-1")
    record_key = Keys().idempotency(Keys().stream("map"), "replayed-1")
    await client.expire(record_key, 100)
    record = await client.get(record_key)
    writes = await _writes(client)
    replay = await publisher.submit(Publication(events, "replayed-1"))
    assert replay.replayed
    assert await _writes(client) > writes  # a write, for WAIT to count from
    assert replay.receipts == first
    assert await client.get(record_key) == record
    assert 0 < await client.ttl(record_key) <= 100
    await client.aclose()


async def _writes(client: Redis) -> int:
    """Redis's count of changes to its data since its last save."""
    info = await client.info("persistence")
    return int(info["rdb_changes_since_last_save"])

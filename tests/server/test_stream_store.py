"""The publish path and stream discovery against a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

import aiohttp
import pytest

from relay.client.redis_urls import AsyncStore
from relay.protocol.entries import event_from_entry
from relay.protocol.event import ProgressEvent
from relay.protocol.keys import Keys
from relay.protocol.stream_ids import START, StreamId
from relay.server.settings import Settings
from relay.server.stream_store import StreamStore
from tests.helpers import Entries, async_store_client, event, eventually, serving, store_client

# Every test here runs on a single Redis and on a Redis Cluster.
pytestmark = pytest.mark.stores


@pytest.fixture
async def aredis(redis_url: str) -> AsyncIterator[AsyncStore]:
    client = async_store_client(redis_url)
    yield client
    await client.aclose()


def make(session: str = "s1", wtype: str = "map", progress: float = 10) -> ProgressEvent:
    return ProgressEvent(session_id=session, workflow_type=wtype, step="go", progress=progress)


async def test_publish_writes_flat_entries_to_the_type_stream(aredis: AsyncStore) -> None:
    store = StreamStore(aredis, Keys(), maxlen=100)
    receipts = await store.publish([make(progress=10), make(wtype="character", progress=20.5)])
    ids = [receipt.id for receipt in receipts]
    assert not any(receipt.cancel_requested for receipt in receipts)
    entries = cast(Entries, await aredis.xrange("workflow:progress:map"))
    assert [entry_id for entry_id, _ in entries] == ids[:1]
    fields = entries[0][1]
    assert fields["session_id"] == "s1"
    assert fields["progress"] == "10"
    assert fields["status"] == "running"
    assert int(fields["ts"]) > 0
    assert "metadata" not in fields
    back = event_from_entry("map", ids[0], fields)
    assert back.progress == 10
    assert await aredis.smembers("workflow:types") == {"map", "character"}


async def test_streams_are_trimmed_approximately(aredis: AsyncStore) -> None:
    store = StreamStore(aredis, Keys(), maxlen=100)
    for start in range(0, 2000, 100):
        await store.publish([make(progress=(start + n) % 100) for n in range(100)])
    length = await aredis.xlen("workflow:progress:map")
    assert 100 <= length < 400


async def test_prefix_applies_to_every_key(aredis: AsyncStore) -> None:
    store = StreamStore(aredis, Keys("tenant1:"), maxlen=100)
    await store.publish([make()])
    assert await aredis.exists("tenant1:workflow:progress:map")
    assert await aredis.exists("tenant1:workflow:types")
    assert await store.discover() == {"tenant1:workflow:progress:map"}


async def test_discover_finds_raw_xadd_streams_and_ignores_other_keys(aredis: AsyncStore) -> None:
    store = StreamStore(aredis, Keys(), maxlen=100)
    await store.publish([make(wtype="map")])
    await aredis.xadd(
        "workflow:progress:encounter", {"session_id": "s", "step": "a", "progress": "1"}
    )
    await aredis.set("workflow:progress:not-a-stream", "x")
    await aredis.xadd("other:stream", {"a": "1"})
    assert await store.discover() == {"workflow:progress:map", "workflow:progress:encounter"}


async def test_last_ids(aredis: AsyncStore) -> None:
    store = StreamStore(aredis, Keys(), maxlen=100)
    receipts = await store.publish([make(), make()])
    assert await store.last_ids(["workflow:progress:map", "workflow:progress:none"]) == {
        "workflow:progress:map": StreamId.parse(receipts[1].id),
        "workflow:progress:none": START,
    }


async def test_gateway_trims_entries_older_than_the_age_limit(
    redis_url: str,
) -> None:
    settings = Settings(redis_url=redis_url, stream_max_age=1, read_block_ms=100)
    async with serving(settings) as base, aiohttp.ClientSession() as http:
        for n in range(5):
            async with http.post(f"{base}/api/workflows/progress", json=event(progress=n)):
                pass
        with store_client(redis_url) as client:
            assert client.xlen("workflow:progress:map") == 5
            await eventually(lambda: client.xlen("workflow:progress:map") == 0, what="age trim")
            async with http.post(f"{base}/api/workflows/progress", json=event()) as response:
                assert response.status == 202
            assert client.xlen("workflow:progress:map") == 1


async def test_new_types_are_announced_once(aredis: AsyncStore) -> None:
    store = StreamStore(aredis, Keys(), maxlen=100)
    await store.publish([make(wtype="map")])
    await store.publish([make(wtype="map"), make(wtype="encounter")])
    await store.publish([make(wtype="encounter")])
    notes = cast(Entries, await aredis.xrange("workflow:announcements"))
    assert [fields["types"] for _, fields in notes] == ["map", "encounter"]

"""The stream reader against a real Redis: order, discovery, bad entries, Redis restarts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from relay.protocol.event import ProgressEvent
from relay.protocol.frames import Envelope
from relay.protocol.keys import Keys
from relay.protocol.stream_ids import StreamId
from relay.server.connections import open_connections
from relay.server.hub import Hub
from relay.server.ingest import Ingest
from relay.server.reader import StreamReader
from relay.server.session_view import SessionView
from relay.server.settings import Settings
from relay.server.stream_store import StreamStore
from relay.server.subscriber import Subscriber
from tests.conftest import RedisServer
from tests.helpers import eventually

# Every test here on redis_url runs on a single Redis and on a Redis Cluster; those
# on own_redis stop or freeze a single server of their own.
pytestmark = pytest.mark.stores


async def _noop(*_: object) -> None:
    return None


class Collector(Subscriber):
    __slots__ = ("got",)

    def __init__(self) -> None:
        super().__init__(_noop, _noop, limit=100_000)
        self.got: list[Envelope] = []

    def deliver(self, item: Envelope | str) -> None:
        assert isinstance(item, Envelope)
        self.got.append(item)


class Running:
    """A reader task feeding a hub with one catch-all collector."""

    def __init__(self, url: str, count: int = 100) -> None:
        # The clients a gateway opens, of a single Redis or of a cluster.
        self.connections = open_connections(Settings(redis_url=url, read_block_ms=100))
        self.commands = self.connections.commands
        keys = Keys()
        self.store = StreamStore(self.commands, keys, maxlen=10_000)
        hub = Hub()
        self.collector = Collector()
        hub.attach(self.collector)
        hub.subscribe(self.collector, ("*", None))
        self.view = SessionView(ttl_ms=86_400_000, max_sessions=1000)
        self.ingest = Ingest(keys, hub, self.view)
        self.reader = StreamReader(
            self.store,
            self.connections.reader,
            self.ingest,
            count=count,
            block_ms=100,
            discovery_interval=0.1,
        )
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.reader.run())
        await asyncio.wait_for(self.reader.started.wait(), 5)

    async def stop(self) -> None:
        assert self.task is not None
        await self.reader.stop(self.task)
        await self.connections.aclose()

    def ids(self) -> list[str]:
        return [envelope.id for envelope in self.collector.got]

    async def publish(self, events: list[ProgressEvent]) -> list[str]:
        return [receipt.id for receipt in await self.store.publish(events)]


@pytest.fixture
async def running(redis_url: str) -> AsyncIterator[Running]:
    instance = Running(redis_url)
    await instance.start()
    yield instance
    await instance.stop()


def make(n: int, wtype: str = "map") -> ProgressEvent:
    return ProgressEvent(session_id=f"s{n % 3}", workflow_type=wtype, step="go", progress=n % 100)


async def test_history_before_start_is_not_replayed_as_news(redis_url: str) -> None:
    instance = Running(redis_url)
    await instance.publish([make(1)])
    await instance.start()
    try:
        ids = await instance.publish([make(2)])
        await eventually(lambda: instance.ids() == ids)
    finally:
        await instance.stop()


async def test_reads_every_entry_in_stream_order_across_batches(running: Running) -> None:
    ids: list[str] = []
    for start in range(0, 450, 50):
        ids += await running.publish([make(n) for n in range(start, start + 50)])
    await eventually(lambda: len(running.ids()) == len(ids))
    assert running.ids() == ids


async def test_new_type_created_by_raw_xadd_is_picked_up(running: Running) -> None:
    await running.publish([make(1)])
    await eventually(lambda: len(running.ids()) == 1)
    raw_id = await running.commands.xadd(
        "workflow:progress:brand-new", {"session_id": "x", "step": "a", "progress": "5"}
    )
    await eventually(lambda: raw_id in running.ids(), timeout=3)
    envelope = running.collector.got[-1]
    assert envelope.workflow_type == "brand-new"


async def test_invalid_entries_are_skipped_and_counted(running: Running) -> None:
    await running.publish([make(0)])
    await eventually(lambda: len(running.ids()) == 1)
    stream = "workflow:progress:map"
    await running.commands.xadd(stream, {"session_id": "s", "step": "a", "progress": "lots"})
    await running.commands.xadd(stream, {"step": "a", "progress": "1"})
    await running.commands.xadd(
        stream, {"session_id": "s", "step": "a", "progress": "1", "metadata": "{"}
    )
    good = await running.commands.xadd(stream, {"session_id": "s", "step": "a", "progress": "1"})
    await eventually(lambda: good in running.ids())
    assert running.ingest.invalid == 3
    assert len(running.ids()) == 2


async def test_survives_redis_restart_and_resumes_from_its_last_id(own_redis: RedisServer) -> None:
    own_redis.stop()
    own_redis.start(appendonly=True)
    instance = Running(own_redis.url)
    await instance.start()
    try:
        first = await instance.publish([make(n) for n in range(5)])
        await eventually(lambda: instance.ids() == first)
        own_redis.stop()
        await eventually(lambda: not instance.reader.ready, what="reader to notice")
        own_redis.start(appendonly=True)
        await eventually(lambda: instance.reader.ready, what="reader to reconnect")
        second = await instance.publish([make(n) for n in range(5, 10)])
        await eventually(lambda: len(instance.ids()) == 10)
        assert instance.ids() == first + second
        assert instance.reader.redis_errors >= 1
    finally:
        await instance.stop()


async def test_history_at_start_feeds_the_view_but_is_not_routed(redis_url: str) -> None:
    instance = Running(redis_url, count=10)  # several reads to get through the history
    old = await instance.publish([make(n) for n in range(30)])
    await instance.start()
    try:
        stream = "workflow:progress:map"
        # until the history is read, live routing starts after its end
        assert instance.reader.live_from(stream) == StreamId.parse(old[-1])
        assert not instance.reader.caught_up
        new = await instance.publish([make(99)])
        await eventually(lambda: instance.ids() == new)
        assert instance.reader.caught_up
        assert instance.reader.live_from(stream) == StreamId.parse(new[0])
        state = instance.view.get("s0")
        assert state is not None
        assert state.latest.id == new[0]  # s0 is 99 % 3
        assert instance.view.get("s1") is not None  # known from history alone
    finally:
        await instance.stop()

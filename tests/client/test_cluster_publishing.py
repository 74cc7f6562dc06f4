"""Publishing on a single Redis and on a cluster: one script call per type, every key declared."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import cast

import pydantic
import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

from relay.client.reporters import AsyncReporter, Reporter
from relay.client.retry import RetryPolicy
from relay.client.stream_publisher import StreamPublisher
from relay.protocol.entries import Publication
from relay.protocol.event import ProgressEvent, Status
from relay.protocol.keys import Keys, check_prefix
from relay.server.settings import Settings
from tests.cluster import Cluster
from tests.helpers import Entries, async_store_client, store_client

pytestmark = pytest.mark.stores

NO_RETRY = RetryPolicy(retry_for=0)
AsyncStore = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster
SyncStore = redis.Redis | redis.cluster.RedisCluster


def make(
    session: str = "s1", wtype: str = "map", step: str = "a", status: Status | None = None
) -> ProgressEvent:
    if status is None:
        return ProgressEvent(session_id=session, workflow_type=wtype, step=step, progress=10)
    return ProgressEvent(
        session_id=session, workflow_type=wtype, step=step, progress=10, status=status
    )


@pytest.fixture
async def aclient(redis_url: str) -> AsyncIterator[AsyncStore]:
    client = async_store_client(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def client(redis_url: str) -> Iterator[SyncStore]:
    client = store_client(redis_url)
    yield client
    client.close()


@pytest.fixture
def reporter(client: SyncStore) -> Iterator[Reporter]:
    with Reporter(client=client, retry=NO_RETRY) as reporter:
        yield reporter


def publisher(aclient: AsyncStore, prefix: str = "") -> StreamPublisher[AsyncStore]:
    return StreamPublisher(aclient, Keys(prefix), maxlen=1000)


async def read(aclient: AsyncStore, stream: str) -> Entries:
    return cast(Entries, await aclient.xrange(stream))


async def ids_of(aclient: AsyncStore, stream: str) -> list[str]:
    return [entry_id for entry_id, _ in await read(aclient, stream)]


@pytest.mark.parametrize("prefix", ["", "app:", "{app}:"])
async def test_one_type_is_written_registered_and_announced(
    aclient: AsyncStore, prefix: str
) -> None:
    keys = Keys(prefix)
    receipts = await publisher(aclient, prefix).publish([make("s1"), make("s2"), make("s1")])
    assert [r.id for r in receipts] == await ids_of(aclient, keys.stream("map"))
    assert not any(r.cancel_requested for r in receipts)
    assert await aclient.smembers(keys.types) == {"map"}
    notes = await read(aclient, keys.announcements)
    assert [fields["types"] for _, fields in notes] == ["map"]


async def test_a_batch_over_thirty_types_lands_in_thirty_streams(aclient: AsyncStore) -> None:
    keys = Keys()
    types = [f"type-{n}" for n in range(30)]
    events = [make(f"s-{t}-{i}", t, step=str(i)) for i in range(2) for t in types]
    store = publisher(aclient)
    receipts = await store.publish(events)
    for wtype in types:
        ids = [r.id for r, e in zip(receipts, events, strict=True) if e.workflow_type == wtype]
        assert await ids_of(aclient, keys.stream(wtype)) == ids
        entries = await read(aclient, keys.stream(wtype))
        assert [fields["step"] for _, fields in entries] == ["0", "1"]
    assert await aclient.smembers(keys.types) == set(types)
    notes = await read(aclient, keys.announcements)
    assert [fields["types"] for _, fields in notes] == [",".join(sorted(types))]
    # Registered types are not announced again.
    await store.publish([make("later", "type-7")])
    assert len(await read(aclient, keys.announcements)) == 1


def test_the_blocking_reporter_publishes_many_types(reporter: Reporter, client: SyncStore) -> None:
    keys = Keys()
    types = [f"kind-{n}" for n in range(30)]
    ids = {wtype: reporter.report("s1", wtype, "a", 10) for wtype in types}
    for wtype, entry_id in ids.items():
        assert [i for i, _ in cast(Entries, client.xrange(keys.stream(wtype)))] == [entry_id]
    assert client.smembers(keys.types) == set(types)


async def test_the_cancel_flag_is_set_reported_and_cleared_per_session(
    aclient: AsyncStore,
) -> None:
    keys = Keys()
    stream = keys.stream("map")
    store = publisher(aclient)
    await store.publish([make("s1", step="start"), make("s2", step="start")])
    await store.publish([make("s1", status="cancel_requested")])
    assert await aclient.exists(keys.cancel(stream, "s1")) == 1
    (s1, s2) = await store.publish([make("s1", step="b"), make("s2", step="b")])
    assert (s1.cancel_requested, s2.cancel_requested) == (True, False)
    await store.publish([make("s1", status="cancelled")])
    assert await aclient.exists(keys.cancel(stream, "s1")) == 0
    (again,) = await store.publish([make("s1", step="c")])
    assert not again.cancel_requested


def test_the_blocking_reporter_learns_of_a_cancellation(
    reporter: Reporter, client: SyncStore
) -> None:
    reporter.publish(make("s1", status="cancel_requested"))
    assert reporter.publish(make("s1", step="b")).cancel_requested
    assert not reporter.publish(make("s2", step="b")).cancel_requested
    reporter.publish(make("s1", status="completed"))
    assert client.exists(Keys().cancel(Keys().stream("map"), "s1")) == 0


async def test_the_async_reporter_reports_and_learns_of_a_cancellation(
    aclient: AsyncStore,
) -> None:
    reporter = AsyncReporter(client=aclient, retry=NO_RETRY)
    first = await reporter.report("s1", "map", "a", 10)
    await reporter.publish(make("s1", status="cancel_requested"))
    assert (await reporter.publish(make("s1", step="b"))).cancel_requested
    assert (await ids_of(aclient, Keys().stream("map")))[0] == first
    await reporter.aclose()


async def test_a_retry_under_the_same_key_writes_nothing_twice(aclient: AsyncStore) -> None:
    keys = Keys()
    store = publisher(aclient)
    events = [make("s1", "map"), make("s2", "route"), make("s3", "map"), make("s4", "tile")]
    first = await store.submit(Publication(events, "order-1"))
    assert not first.replayed
    again = await store.submit(Publication(events, "order-1"))
    assert again.replayed
    assert again.receipts == first.receipts
    looked_up = await store.recorded(Publication(events, "order-1"))
    assert looked_up is not None
    assert looked_up.receipts == first.receipts
    for wtype, count in (("map", 2), ("route", 1), ("tile", 1)):
        assert await aclient.xlen(keys.stream(wtype)) == count
        assert await aclient.exists(keys.idempotency(keys.stream(wtype), "order-1")) == 1


async def test_a_failing_type_leaves_the_others_written_and_its_retry_writes_only_it(
    aclient: AsyncStore,
) -> None:
    keys = Keys()
    broken = keys.stream("broken")
    await aclient.set(broken, "not a stream")
    store = publisher(aclient)
    events = [make("s1", "map"), make("s2", "broken"), make("s3", "tile")]
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        await store.submit(Publication(events, "order-2"))
    written = {wtype: await ids_of(aclient, keys.stream(wtype)) for wtype in ("map", "tile")}
    assert [len(ids) for ids in written.values()] == [1, 1]
    for wtype in ("map", "tile"):
        assert await aclient.exists(keys.idempotency(keys.stream(wtype), "order-2")) == 1
    # Not all of it is on record, so a lookup does not answer it.
    assert await store.recorded(Publication(events, "order-2")) is None
    await aclient.delete(broken)
    retried = await store.submit(Publication(events, "order-2"))
    assert not retried.replayed
    assert [r.id for r in retried.receipts] == [
        written["map"][0],
        *(await ids_of(aclient, broken)),
        written["tile"][0],
    ]
    for wtype in ("map", "broken", "tile"):
        assert await aclient.xlen(keys.stream(wtype)) == 1


async def test_a_flushed_script_cache_is_loaded_again(aclient: AsyncStore) -> None:
    store = publisher(aclient)
    await store.publish([make("s1", "map"), make("s2", "tile")])
    await aclient.script_flush()
    receipts = await store.publish([make("s1", "map"), make("s2", "tile")])
    assert len(receipts) == 2
    assert await aclient.xlen(Keys().stream("tile")) == 2


async def test_only_the_calls_of_a_node_that_lost_its_script_are_sent_again(
    aclient: AsyncStore,
) -> None:
    keys = Keys()
    types = [f"type-{n}" for n in range(12)]
    store = publisher(aclient)
    await store.publish([make("s1", t) for t in types])
    if isinstance(aclient, redis.asyncio.cluster.RedisCluster):
        node = aclient.get_node_from_key(keys.stream(types[0]))
        await aclient.execute_command("SCRIPT", "FLUSH", target_nodes=node)
    else:
        await aclient.script_flush()
    receipts = await store.publish([make("s1", t, step="b") for t in types])
    for wtype, receipt in zip(types, receipts, strict=True):
        assert (await ids_of(aclient, keys.stream(wtype)))[1:] == [receipt.id]


def test_the_blocking_reporter_loads_a_flushed_script_again(
    reporter: Reporter, client: SyncStore
) -> None:
    reporter.report("s1", "map", "a", 10)
    client.script_flush()
    reporter.report("s1", "map", "b", 20)
    assert client.xlen(Keys().stream("map")) == 2


async def test_replicas_cannot_be_awaited_through_a_cluster_client(
    aclient: AsyncStore, client: SyncStore, store_kind: str
) -> None:
    if store_kind == "single":
        StreamPublisher(aclient, Keys(), maxlen=10, min_replicas=1)
        Reporter(client=client, min_replicas=1)
        return
    with pytest.raises(ValueError, match="min_replicas is not supported on a Redis Cluster"):
        StreamPublisher(aclient, Keys(), maxlen=10, min_replicas=1)
    with pytest.raises(ValueError, match="min_replicas is not supported on a Redis Cluster"):
        Reporter(client=client, min_replicas=1)


@pytest.mark.parametrize("prefix", ["", "app:", "{app}:", "a-b.c:"])
def test_a_prefix_without_braces_or_with_one_tag_is_accepted(prefix: str) -> None:
    assert Keys(prefix).prefix == prefix
    assert Settings(stream_prefix=prefix).stream_prefix == prefix


@pytest.mark.parametrize(
    ("prefix", "reason"),
    [
        ("{app:", "unbalanced"),
        ("app}:", "unbalanced"),
        ("{a}{b}:", "at most one"),
        ("{a{b}}:", "at most one"),
        ("{}:", "empty"),
        ("}app{:", "before"),
    ],
)
def test_a_prefix_with_other_braces_is_refused(prefix: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_prefix(prefix)
    with pytest.raises(ValueError, match=reason):
        Keys(prefix)
    with pytest.raises(pydantic.ValidationError, match=reason):
        Settings(stream_prefix=prefix)
    # The client is never used: the prefix is refused first.
    with pytest.raises(ValueError, match=reason):
        Reporter(client=redis.Redis(unix_socket_path="/nonexistent"), prefix=prefix)


@pytest.mark.parametrize("prefix", ["", "app:", "{app}:"])
def test_companions_share_their_streams_slot(redis_cluster: Cluster, prefix: str) -> None:
    keys = Keys(prefix)
    with redis_cluster.client() as client:
        for wtype in ("map", "route", "tile"):
            stream = keys.stream(wtype)
            slot = client.cluster_keyslot(stream)
            for companion in (
                keys.cancel(stream, "session-1"),
                keys.idempotency(stream, "order-1"),
                keys.epoch(stream),
                keys.liveness(stream, "session-1", "1-0"),
            ):
                assert client.cluster_keyslot(companion) == slot, companion

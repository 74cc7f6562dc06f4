"""The stream reader and the gateway's reads on a single Redis and on a Redis Cluster."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.exceptions import RedisClusterException

from relay.client.redis_urls import AsyncStore, Kind, async_redis_store, is_cluster_url
from relay.protocol.entries import StreamEntry
from relay.protocol.keys import Keys
from relay.protocol.stream_ids import START, StreamId
from relay.server.read_groups import ReadGroups
from relay.server.reader import StreamReader
from relay.server.stream_checks import StreamChecks
from relay.server.stream_store import StreamStore
from tests.cluster import Cluster
from tests.helpers import async_store_client, eventually, store_client, wait_until

pytestmark = pytest.mark.stores

KEYS = Keys()
READER_TIMEOUT = 5.0


class Recorder:
    """A reader handler keeping what it was handed, per stream."""

    def __init__(self) -> None:
        self.live: dict[str, list[str]] = {}
        self.history: dict[str, list[str]] = {}
        self.forgotten: list[str] = []
        self.resets: list[str] = []

    def __call__(self, stream_key: str, entries: list[StreamEntry], live: bool) -> None:
        kept = self.live if live else self.history
        kept.setdefault(stream_key, []).extend(entry_id for entry_id, _ in entries)

    def forget(self, stream_key: str) -> None:
        self.forgotten.append(stream_key)

    def reset(self, stream_key: str, epoch: str) -> None:
        self.resets.append(stream_key)


def command_client(url: str) -> Any:
    """The gateway's command client: plain or cluster (StreamStore takes either)."""
    return async_store_client(url)


def reader_client(url: str) -> AsyncStore:
    """A reader connection as a gateway opens one: a longer timeout than its blocks."""
    kind: Kind = "cluster" if is_cluster_url(url) else "single"
    return async_redis_store(url, kind, decode_responses=True, socket_timeout=READER_TIMEOUT)


class Running:
    """A reader over ``url`` with a recording handler, and a test's own client."""

    def __init__(self, url: str, *, discovery_interval: float = 0.1) -> None:
        self.store = StreamStore(command_client(url), KEYS, maxlen=10_000)
        self.connection = reader_client(url)
        self.recorder = Recorder()
        self.reader = StreamReader(
            self.store,
            self.connection,
            self.recorder,
            count=100,
            block_ms=100,
            discovery_interval=discovery_interval,
        )
        self.client = store_client(url)
        self.task: asyncio.Task[None] | None = None

    def xadd(self, workflow_type: str, n: int) -> str:
        fields: Any = {"session_id": "s", "n": str(n)}
        return str(self.client.xadd(KEYS.stream(workflow_type), fields))

    def live(self, workflow_type: str) -> list[str]:
        return self.recorder.live.get(KEYS.stream(workflow_type), [])

    async def close(self) -> None:
        if self.task is not None:
            await self.reader.stop(self.task)
            # Woken and ended by itself, with reads blocked far longer than the
            # stop's grace: not cancelled as a last resort.
            assert self.task.done()
            assert not self.task.cancelled()
        await self.store.redis.aclose()
        await self.connection.aclose()
        self.client.close()


@asynccontextmanager
async def running(url: str, **options: Any) -> AsyncIterator[Running]:
    found = Running(url, **options)
    try:
        found.task = asyncio.create_task(found.reader.run())
        await asyncio.wait_for(found.reader.started.wait(), 10)
        await eventually(lambda: found.reader.ready and found.reader.caught_up)
        yield found
    finally:
        await found.close()


def types(count: int, prefix: str = "t") -> list[str]:
    return [f"{prefix}{n:03d}" for n in range(count)]


def spread(client: Any, names: list[str]) -> int:
    """On how many primaries the streams of ``names`` live (1 on a single Redis)."""
    if not isinstance(client, redis.cluster.RedisCluster):
        return 1
    cluster: Any = client
    return len({cluster.get_node_from_key(KEYS.stream(name)).name for name in names})


async def test_thirty_types_over_every_primary_are_read_from_history_then_live_in_order(
    redis_url: str, store_kind: str
) -> None:
    names = types(30)
    with store_client(redis_url) as client:
        history = {name: [str(client.xadd(KEYS.stream(name), {"n": "0"}))] for name in names}
        assert spread(client, names) == (3 if store_kind == "cluster" else 1)
    async with running(redis_url) as run:
        assert {KEYS.workflow_type(key): ids for key, ids in run.recorder.history.items()} == (
            history
        )
        sent = {name: [run.xadd(name, n) for n in range(1, 6)] for name in names}
        await eventually(
            lambda: all(run.live(name) == sent[name] for name in names),
            what="every live entry, in order",
        )
        assert run.reader.lag_ms == dict.fromkeys(names, 0)


async def test_types_made_by_raw_xadd_after_start_are_found_on_every_primary(
    redis_url: str,
) -> None:
    names = types(30, "raw")
    async with running(redis_url) as run:
        sent = {name: run.xadd(name, 1) for name in names}
        await eventually(
            lambda: all(run.live(name) == [sent[name]] for name in names),
            what="every raw stream found by SCAN",
        )


async def test_a_type_announced_after_start_is_followed_at_once(redis_url: str) -> None:
    # Discovery ticks are far apart: only the announcement can make the stream known.
    async with running(redis_url, discovery_interval=600) as run:
        first = run.xadd("announced", 1)
        run.client.xadd(KEYS.announcements, {"types": "announced"})
        await eventually(lambda: run.live("announced") == [first], what="the announced type")
        second = run.xadd("announced", 2)
        await eventually(lambda: run.live("announced") == [first, second])


async def test_history_entries_and_reaches_back_to_read_one_stream(redis_url: str) -> None:
    store = StreamStore(command_client(redis_url), KEYS, maxlen=10_000)
    stream = KEYS.stream("story")
    try:
        with store_client(redis_url) as client:
            ids = [str(client.xadd(stream, {"n": str(n)})) for n in range(5)]
            client.xadd(KEYS.stream("other"), {"n": "0"})
        parsed = [StreamId.from_redis(entry_id) for entry_id in ids]
        entries = await store.history(stream, parsed[0], parsed[3], 10)
        assert [entry_id for entry_id, _ in entries] == ids[1:4]
        picked = await store.entries(stream, [parsed[4], parsed[1]])
        assert [entry_id for entry_id, _ in picked] == [ids[4], ids[1]]
        assert await store.reaches_back_to(stream, START)
        assert await store.reaches_back_to(stream, parsed[2])
        last = await store.last_ids([stream, KEYS.stream("other"), KEYS.stream("none")])
        assert last[stream] == parsed[4]
        assert last[KEYS.stream("none")] == START
        await store.probe_write(1000)
        await store.trim_older_than([stream, KEYS.stream("other")], 0)
        assert not await store.reaches_back_to(stream, parsed[2])
        assert await store.discover() == {stream, KEYS.stream("other")}
        assert await store.server_id()
    finally:
        await store.redis.aclose()


async def test_stream_checks_answer_for_streams_on_every_node(redis_url: str) -> None:
    checks = StreamChecks(command_client(redis_url), KEYS)
    names = [KEYS.stream(name) for name in types(12, "chk")]
    try:
        with store_client(redis_url) as client:
            ids = {key: str(client.xadd(key, {"n": "0"})) for key in names}
            client.set(KEYS.stream("plain"), "x")
        kinds = await checks.key_types([*names, KEYS.stream("plain"), KEYS.stream("gone")])
        assert kinds == {**dict.fromkeys(names, "stream"), KEYS.stream("plain"): "string"} | {
            KEYS.stream("gone"): "none"
        }
        epochs = await checks.ensure_epochs(names)
        assert all(epochs.values())
        positions = {key: StreamId.from_redis(entry_id) for key, entry_id in ids.items()}
        states = await checks.stream_states({**positions, KEYS.stream("gone"): START})
        assert all(states[key].holds_position for key in names)
        assert all(states[key].epoch == epochs[key] for key in names)
        assert states[KEYS.stream("gone")].kind == "none"
        assert await checks.holding([(names[0], positions[names[0]]), (names[1], START)]) == [
            True,
            False,
        ]
        # A gateway that knew the epoch replaces it; one that knew an older one adopts it.
        bumped = await checks.bump_epochs({key: epochs[key] for key in names})
        assert all(bumped[key] != epochs[key] for key in names)
        again = await checks.bump_epochs({key: epochs[key] for key in names})
        assert again == bumped
    finally:
        await checks.redis.aclose()


async def test_a_cluster_client_error_is_counted_and_the_reader_goes_on(redis_url: str) -> None:
    async with running(redis_url) as run:
        real_server_id = run.store.server_id
        failures = 3

        async def failing_server_id() -> str:
            nonlocal failures
            if failures:
                failures -= 1
                raise RedisClusterException("no node serves that slot")
            return await real_server_id()

        run.store.server_id = failing_server_id  # type: ignore[method-assign]
        await eventually(lambda: failures == 0, what="every injected failure")
        sent = run.xadd("after", 1)
        await eventually(lambda: run.live("after") == [sent], what="reading on")
        assert run.reader.redis_errors >= 3
        assert run.task is not None
        assert not run.task.done()


async def test_one_group_failing_does_not_stop_the_others(redis_url: str) -> None:
    async with running(redis_url) as run:
        groups = run.reader._groups
        failing = KEYS.stream("failing")
        real_read = groups._read
        injected = 0

        async def read(client: Any, streams: dict[str, str], block_ms: int) -> Any:
            nonlocal injected
            if failing in streams and injected < 3:
                injected += 1
                raise RedisClusterException("injected")
            return await real_read(client, streams, block_ms)

        groups._read = read  # type: ignore[method-assign]
        first = run.xadd("failing", 1)
        await eventually(lambda: injected == 3, what="the failing group to fail")
        sent = run.xadd("healthy", 1)
        await eventually(lambda: run.live("healthy") == [sent], what="the healthy group")
        await eventually(lambda: run.live("failing") == [first], what="the failing group back")
        assert run.task is not None
        assert not run.task.done()


def _command_calls(client: Any) -> dict[str, int]:
    """Calls per command, summed over every primary."""
    stats: Any = client.info("commandstats")
    per_node = stats.values() if isinstance(client, redis.cluster.RedisCluster) else [stats]
    calls: dict[str, int] = {}
    for node in per_node:
        for name, value in node.items():
            if name.startswith("cmdstat_"):
                calls[name] = calls.get(name, 0) + int(value["calls"])
    return calls


async def _idle_calls(url: str, count: int) -> dict[str, int]:
    """Commands Redis ran over ten idle discovery ticks of a reader following ``count`` types."""
    with store_client(url) as client:
        for name in types(count, f"idle{count}-"):
            client.xadd(KEYS.stream(name), {"n": "0"})
    async with running(url) as run:
        reader = run.reader
        await eventually(lambda: reader.ticks >= 2)
        before = _command_calls(run.client)
        ticks = reader.ticks
        await eventually(lambda: reader.ticks >= ticks + 10, what="ten idle ticks")
        after = _command_calls(run.client)
    return {name: after[name] - before.get(name, 0) for name in after}


async def test_idle_reading_costs_no_command_per_stream(redis_url: str) -> None:
    few = await _idle_calls(redis_url, 2)
    many = await _idle_calls(redis_url, 200)
    # Ten ticks cost the same few commands per primary, whatever the number of
    # streams; the margin allows for a tick or a block expiry more or less.
    margin = 6
    for name in few.keys() | many.keys():
        assert many.get(name, 0) <= few.get(name, 0) + margin, (name, few, many)


def _client(cluster: Cluster) -> redis.cluster.RedisCluster:
    """A client of ``cluster`` seeded with a running primary (the first node may be down)."""
    port = cluster.primary_ports()[0]
    return redis.cluster.RedisCluster(host="127.0.0.1", port=port, decode_responses=True)


def _spread_types(cluster: Cluster) -> list[str]:
    """Types whose streams live on every primary."""
    names = types(12, "fo")
    with cluster.client() as client:
        assert spread(client, names) == 3
    return names


def _xadd_when_served(cluster: Cluster, stream: str) -> str:
    """XADD once the cluster serves the stream's slot again."""
    found: list[str] = []

    def added() -> bool:
        try:
            with _client(cluster) as client:
                found.append(str(client.xadd(stream, {"n": "after"})))
        except (redis.RedisError, RedisClusterException):
            return False
        return True

    wait_until(added, timeout=30, what=f"an XADD to {stream}")
    return found[0]


async def _one_more_each_arrives(
    run: Running, cluster: Cluster, before: dict[str, str], after: str
) -> None:
    """Write one more event to each type once its slot is served, and wait until each arrives."""
    sent = {
        name: await asyncio.to_thread(_xadd_when_served, cluster, KEYS.stream(name))
        for name in before
    }
    await eventually(
        lambda: all(run.live(name) == [before[name], sent[name]] for name in before),
        timeout=30,
        what=f"every event written after {after}",
    )


def count_checks(run: Running) -> Callable[[], int]:
    """How many times the reader has checked its streams' integrity since this call."""
    checks = run.reader._checks
    real_states = checks.stream_states
    calls = 0

    async def stream_states(positions: Any) -> Any:
        nonlocal calls
        calls += 1
        return await real_states(positions)

    checks.stream_states = stream_states  # type: ignore[method-assign]
    return lambda: calls


async def test_a_failover_is_followed_and_every_later_event_arrives(own_cluster: Cluster) -> None:
    names = _spread_types(own_cluster)
    async with running(own_cluster.url) as run:
        before = {name: run.xadd(name, 0) for name in names}
        await eventually(lambda: all(run.live(name) == [before[name]] for name in names))
        verified = count_checks(run)
        victim = own_cluster.primary_ports()[0]
        own_cluster.node(victim).stop(kill=True)
        await asyncio.to_thread(own_cluster.wait_settled)
        await _one_more_each_arrives(run, own_cluster, before, "the failover")
        assert verified() >= 1
        assert run.task is not None
        assert not run.task.done()


async def test_a_primary_replaced_without_errors_is_noticed_by_its_run_id(
    own_cluster: Cluster,
) -> None:
    names = _spread_types(own_cluster)
    async with running(own_cluster.url) as run:
        before = {name: run.xadd(name, 0) for name in names}
        await eventually(lambda: all(run.live(name) == [before[name]] for name in names))
        verified = count_checks(run)
        primaries = set(own_cluster.primary_ports())
        replica = next(port for port in own_cluster.ports if port not in primaries)
        with redis.Redis(port=replica, decode_responses=True) as node:
            node.execute_command("CLUSTER", "FAILOVER")
        wait_until(lambda: replica in own_cluster.primary_ports(), timeout=30)
        await asyncio.to_thread(own_cluster.wait_settled)
        await eventually(lambda: verified() >= 1, timeout=15, what="the integrity checks")
        await _one_more_each_arrives(run, own_cluster, before, "the switch")


async def test_a_failing_group_whose_streams_are_all_dropped_fails_no_more(redis_url: str) -> None:
    client = reader_client(redis_url)
    try:
        groups = ReadGroups(client, count=10, block_ms=100)
        stream = KEYS.stream("dropped")
        groups.set(stream, "0-0")
        groups.hold(groups.group_of(stream), until=float("inf"))
        assert groups.failing()
        groups.remove(stream)
        assert not groups.failing()
    finally:
        await client.aclose()

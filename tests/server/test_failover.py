"""A failover under a gateway: nothing lost, nothing twice, on Sentinel and on a cluster.

A numbered sequence is published, alternately over HTTP (each event under an
Idempotency-Key, retried until accepted) and by a :class:`Reporter` on the
gateway's own URL, while a WebSocket subscriber follows the type. Midway the
primary holding the type's stream is killed with SIGKILL; its replica takes
over (promoted by the sentinels, or by the cluster itself), and the old
primary comes back as the new one's replica. Whatever was acknowledged before
the kill is on the replica that took over: through Sentinel, publishes wait
for one replica (``min_replicas=1``); on a cluster, where relay refuses
``min_replicas``, the kill waits until the replica has it. The subscriber must
end with every number exactly once, and the gateway must be ready again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Protocol

import aiohttp
import pytest
from redis.exceptions import RedisError

from relay.client.redis_urls import AsyncStore
from relay.client.reporters import Reporter
from relay.client.retry import RetryPolicy
from relay.server.connections import connect
from relay.server.settings import Settings
from tests.cluster import Cluster
from tests.followers import WsFollower
from tests.helpers import Gateway, eventually, until
from tests.sentinel import Sentinels
from tests.server.test_fault_sequence import RETRY_FOR, TYPE, Sequence, caught_up

BEFORE, DURING, AFTER = 30, 30, 20
PROMOTION_TIMEOUT = 30.0
READY_POLL = 0.1
STREAM = f"workflow:progress:{TYPE}"


class Failover(Protocol):
    """A primary with a replica ready to take over, and the means to make it happen."""

    url: str
    # What publishers wait for; 0 where relay cannot promise it (a cluster).
    min_replicas: int

    def held_by_heir(self) -> int:
        """How many entries of the stream the replica that will take over holds."""

    def kill_primary(self) -> None:
        """SIGKILL the primary holding the stream."""

    def promoted(self) -> bool:
        """Whether the replica serves the stream now."""

    def rejoin(self) -> None:
        """Start the old primary again, as the new one's replica."""


class SentinelFailover:
    """Sentinels promote the replica of the one primary."""

    min_replicas = 1

    def __init__(self, sentinels: Sentinels) -> None:
        self.sentinels = sentinels
        self.url = sentinels.url()

    def held_by_heir(self) -> int:
        with self.sentinels.replica.client() as replica:
            return int(replica.xlen(STREAM))

    def kill_primary(self) -> None:
        self.sentinels.primary.stop(kill=True)

    def promoted(self) -> bool:
        return self.sentinels.primary_port() == self.sentinels.replica.port

    def rejoin(self) -> None:
        # Until a replica is back, no publish can reach min_replicas: the old
        # primary rejoins as the replica of the new one, as an operator would.
        self.sentinels.primary.replica_of = self.sentinels.replica.port
        self.sentinels.primary.start()


class ClusterFailover:
    """The cluster promotes the replica of the primary serving the stream's slot."""

    min_replicas = 0

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.url = cluster.url
        with cluster.client() as client:
            self.primary = cluster.node(int(client.get_node_from_key(STREAM).port))
        with self.primary.client() as primary:
            heir = primary.info("replication")["slave0"]
        self.heir = cluster.node(int(heir["port"]))

    def held_by_heir(self) -> int:
        with self.heir.client() as heir:
            # A replica answers reads of its primary's slots once asked to.
            heir.execute_command("READONLY")
            return int(heir.xlen(STREAM))

    def kill_primary(self) -> None:
        self.primary.stop(kill=True)

    def promoted(self) -> bool:
        with self.heir.client() as heir:
            return bool(heir.info("replication")["role"] == "master")

    def rejoin(self) -> None:
        # A node that comes back after its replica took over rejoins as its replica.
        self.primary.start()


@pytest.fixture(params=["sentinel", "cluster"])
def failover(request: pytest.FixtureRequest) -> Iterator[Failover]:
    """A primary about to fail over, found through Sentinel or in a cluster."""
    if request.param == "sentinel":
        yield SentinelFailover(request.getfixturevalue("sentinels"))
    else:
        yield ClusterFailover(request.getfixturevalue("own_cluster"))


class Readiness:
    """Polls a gateway's ``/readyz`` and adds up the time it answered anything but ready."""

    def __init__(self, http: aiohttp.ClientSession, gateway: Gateway) -> None:
        self.http = http
        self.url = f"{gateway.url}/readyz"
        self.unready_seconds = 0.0
        self.ready = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._poll())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        timeout = aiohttp.ClientTimeout(total=2)
        while True:
            began = loop.time()
            try:
                async with self.http.get(self.url, timeout=timeout) as response:
                    self.ready = response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                self.ready = False
            await asyncio.sleep(READY_POLL)
            if not self.ready:
                self.unready_seconds += loop.time() - began


class Publisher:
    """Publishes the sequence's next numbers: even ones over HTTP, odd ones by a Reporter."""

    def __init__(self, sequence: Sequence, reporter: Reporter, gateway: Gateway) -> None:
        self.sequence = sequence
        self.reporter = reporter
        self.gateway = gateway
        # The longest any one event took to be accepted, retries included.
        self.longest_wait = 0.0

    async def run(self, count: int) -> None:
        loop = asyncio.get_running_loop()
        start = len(self.sequence.published)
        for n in range(start, start + count):
            began = loop.time()
            if n % 2:
                await asyncio.to_thread(self._report, n)
                self.sequence.published.append(n)
            else:
                await self.sequence.post(self.gateway, n)
            self.longest_wait = max(self.longest_wait, loop.time() - began)

    def _report(self, n: int) -> None:
        event = self.sequence.event(n)
        self.reporter.report(
            str(event["session_id"]),
            TYPE,
            str(event["step"]),
            n % 100,
            {"seq": n},
        )


@pytest.mark.slow
async def test_a_failover_loses_and_repeats_nothing(
    failover: Failover,
    start_gateway: Callable[..., Gateway],
    http: aiohttp.ClientSession,
) -> None:
    url = failover.url
    gateway = start_gateway(url, RELAY_MIN_REPLICAS=str(failover.min_replicas))
    follower = WsFollower(http, gateway, TYPE)
    follower.start()
    await eventually(lambda: follower.connections, what="the subscriber")
    readiness = Readiness(http, gateway)
    readiness.start()
    sequence = Sequence(http, url)
    reporter = Reporter(
        url, min_replicas=failover.min_replicas, retry=RetryPolicy(retry_for=RETRY_FOR)
    )
    publisher = Publisher(sequence, reporter, gateway)
    loop = asyncio.get_running_loop()
    try:
        await publisher.run(BEFORE)
        await caught_up([follower], sequence)
        if failover.min_replicas:
            # WAIT answered only once the replica had each.
            assert failover.held_by_heir() == BEFORE
        else:
            await eventually(lambda: failover.held_by_heir() == BEFORE, what="replication")

        killed_at = loop.time()
        failover.kill_primary()
        during = asyncio.create_task(publisher.run(DURING))
        await eventually(
            failover.promoted, timeout=PROMOTION_TIMEOUT, what="the replica to be promoted"
        )
        promoted_after = loop.time() - killed_at
        await asyncio.to_thread(failover.rejoin)
        await eventually(lambda: len(follower.seqs) > BEFORE, timeout=RETRY_FOR, what="delivery")
        delivery_stalled = loop.time() - killed_at
        await during
        await publisher.run(AFTER)
        await caught_up([follower], sequence)

        async def ready() -> bool:
            return readiness.ready

        await until(ready, timeout=RETRY_FOR, what="/readyz to answer ready again")
    finally:
        await readiness.stop()
        await follower.stop()
        reporter.close()
        await sequence.raw.aclose()

    tally = follower.tally(sequence.published)
    repeated = sorted(n for n, times in Counter(follower.seqs).items() if times > 1)
    print(
        f"\n{type(failover).__name__}: published {len(sequence.published)}, "
        f"received {len(follower.seqs)}, lost {len(tally.lost)}, "
        f"duplicated {len(repeated)} (ids repeated {len(tally.duplicated)}), "
        f"reordered {len(tally.reordered)}; replica promoted after {promoted_after:.1f}s, "
        f"delivery stalled {delivery_stalled:.1f}s, gateway unready "
        f"{readiness.unready_seconds:.1f}s, longest wait for one publish "
        f"{publisher.longest_wait:.1f}s, HTTP refusals {sequence.refusals}, "
        f"subscriber connections {follower.connections}"
    )
    assert sequence.published == list(range(BEFORE + DURING + AFTER))
    assert tally.lost == []
    assert repeated == [], [
        (n, entry_id)
        for n, entry_id in zip(follower.seqs, follower.ids, strict=True)
        if n in repeated
    ]
    assert tally.duplicated == []
    assert tally.reordered == []
    assert follower.signals == []  # no history was lost, so none was to be refetched


@pytest.mark.slow
async def test_the_gateways_clients_reach_the_promoted_replica(sentinels: Sentinels) -> None:
    # Each of the gateway's clients on its own, with nothing else to wake it:
    # redis-py's single-connection client, for one, would knock at the dead
    # primary for ever.
    connections = await connect(Settings(redis_url=sentinels.url(), read_block_ms=100))
    stream = f"workflow:progress:{TYPE}"
    try:
        await connections.commands.xadd(stream, {"n": "1"})
        assert await connections.reader.xread({stream: "0"}, block=100)
        sentinels.primary.stop(kill=True)

        def answers(client: AsyncStore) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                try:
                    return bool(await client.xread({stream: "0"}, block=100))
                except RedisError:
                    return False

            return check

        for name, client in (("reader", connections.reader), ("commands", connections.commands)):
            await until(answers(client), timeout=PROMOTION_TIMEOUT, what=f"the {name} client")
        assert sentinels.primary_port() == sentinels.replica.port
    finally:
        await connections.aclose()

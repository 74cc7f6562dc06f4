"""A failover under a gateway that finds Redis through Sentinel: nothing lost, nothing twice.

A numbered sequence is published, alternately over HTTP (each event under an
Idempotency-Key, retried until accepted) and by a :class:`Reporter` on the
same ``redis+sentinel://`` URL, while a WebSocket subscriber follows the type.
Midway the primary is killed with SIGKILL; the sentinels promote the replica,
and the old primary comes back as the new one's replica. Publishes wait for
one replica (``min_replicas=1``), so whatever was acknowledged before the
kill was on the replica that took over. The subscriber must end with every
number exactly once, and the gateway must be ready again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from redis.exceptions import RedisError

from relay.client.redis_urls import AsyncStore
from relay.client.reporters import Reporter
from relay.client.retry import RetryPolicy
from relay.server.connections import connect
from relay.server.settings import Settings
from tests.followers import WsFollower
from tests.helpers import Gateway, eventually, until
from tests.sentinel import Sentinels
from tests.server.test_fault_sequence import RETRY_FOR, TYPE, Sequence, caught_up

BEFORE, DURING, AFTER = 30, 30, 20
PROMOTION_TIMEOUT = 30.0
READY_POLL = 0.1


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
    sentinels: Sentinels,
    start_gateway: Callable[..., Gateway],
    http: aiohttp.ClientSession,
) -> None:
    url = sentinels.url()
    gateway = start_gateway(url, RELAY_MIN_REPLICAS="1")
    follower = WsFollower(http, gateway, TYPE)
    follower.start()
    await eventually(lambda: follower.connections, what="the subscriber")
    readiness = Readiness(http, gateway)
    readiness.start()
    sequence = Sequence(http, url)
    reporter = Reporter(url, min_replicas=1, retry=RetryPolicy(retry_for=RETRY_FOR))
    publisher = Publisher(sequence, reporter, gateway)
    loop = asyncio.get_running_loop()
    try:
        await publisher.run(BEFORE)
        await caught_up([follower], sequence)
        with sentinels.replica.client() as replica:
            on_replica = replica.xlen(f"workflow:progress:{TYPE}")
        assert on_replica == BEFORE  # WAIT answered only once the replica had each

        killed_at = loop.time()
        sentinels.primary.stop(kill=True)
        during = asyncio.create_task(publisher.run(DURING))
        await eventually(
            lambda: sentinels.primary_port() == sentinels.replica.port,
            timeout=PROMOTION_TIMEOUT,
            what="the sentinels to promote the replica",
        )
        promoted_after = loop.time() - killed_at
        # Until a replica is back, no publish can reach min_replicas: the old
        # primary rejoins as the replica of the new one, as an operator would.
        sentinels.primary.replica_of = sentinels.replica.port
        await asyncio.to_thread(sentinels.primary.start)
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
        f"\nsentinel failover: published {len(sequence.published)}, "
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

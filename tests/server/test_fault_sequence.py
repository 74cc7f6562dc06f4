"""One numbered sequence of events through every fault, counted per subscriber.

Events are published over HTTP (with an idempotency key, retried until
accepted) and by raw ``XADD``, alternately, each carrying its number. Two
gateways reach Redis through a proxy; each has a WebSocket and an SSE
subscriber that reconnects and resumes by itself. The sequence goes through a
gateway SIGKILL, a Redis SIGSTOP, a Redis restart with AOF, a rollback of
Redis to an older RDB snapshot, and a proxy that delays and then cuts the
gateways' Redis connections. Every subscriber must end with every event once,
in order; where Redis itself lost data (the rollback) it must be told so.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from redis.exceptions import ConnectionError

from relay.client.redis_urls import AsyncStore
from tests.conftest import RedisServer
from tests.followers import Follower, SseFollower, WsFollower
from tests.helpers import Gateway, async_store_client, eventually
from tests.proxy import TcpProxy

TYPE = "map"
RETRY_FOR = 60.0


class Sequence:
    """Publishes numbered events, alternating HTTP through a gateway and raw XADD."""

    def __init__(self, http: aiohttp.ClientSession, redis_url: str) -> None:
        self.http = http
        self.raw: AsyncStore = async_store_client(redis_url)
        self.published: list[int] = []
        self.refusals = 0

    def event(self, n: int) -> dict[str, object]:
        return {
            "session_id": f"s{n % 5}",
            "workflow_type": TYPE,
            "step": f"step {n}",
            "progress": n % 100,
            "metadata": {"seq": n},
        }

    async def post(self, gateway: Gateway, n: int) -> None:
        """Publish event ``n`` over HTTP, retrying with the same key until it is accepted."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RETRY_FOR
        headers = {"Idempotency-Key": f"seq-{n}"}
        url = f"{gateway.url}/api/workflows/progress"
        while True:
            try:
                async with self.http.post(url, json=self.event(n), headers=headers) as response:
                    if response.status == 202:
                        break
                    assert response.status == 503, await response.text()
                    self.refusals += 1
            except (aiohttp.ClientError, OSError):
                self.refusals += 1
            assert loop.time() < deadline, f"event {n} was never accepted"
            await asyncio.sleep(0.1)
        self.published.append(n)

    async def xadd(self, n: int) -> None:
        """Publish event ``n`` straight into the stream, as a worker in any language would."""
        event = self.event(n)
        fields = {k: v for k, v in event.items() if k not in ("workflow_type", "metadata")}
        fields["metadata"] = orjson.dumps(event["metadata"]).decode()
        stream = f"workflow:progress:{TYPE}"
        try:
            await self.raw.xadd(stream, fields)  # type: ignore[arg-type]
        except ConnectionError:
            # Raw XADDs are only sent while Redis is up: the pooled connection
            # died with the previous server, which never saw this command.
            await self.raw.xadd(stream, fields)  # type: ignore[arg-type]
        self.published.append(n)

    async def run(self, gateway: Gateway, count: int, *, raw: bool = True) -> None:
        """Publish the next ``count`` numbers, every other one by raw XADD when ``raw``."""
        start = len(self.published)
        for n in range(start, start + count):
            if raw and n % 2:
                await self.xadd(n)
            else:
                await self.post(gateway, n)


@pytest.fixture
def redis_with_aof(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.directory.mkdir()
    server.start(appendonly=True)
    yield server
    server.stop(kill=True)


@pytest.fixture
def proxy(redis_with_aof: RedisServer) -> Iterator[TcpProxy]:
    proxy = TcpProxy(redis_with_aof.port)
    proxy.start()
    yield proxy
    proxy.stop()


async def caught_up(followers: list[Follower], sequence: Sequence) -> None:
    """Wait until every follower has received everything published so far."""
    expected = set(sequence.published)

    def done() -> bool:
        return all(expected <= set(f.seqs) for f in followers)

    await eventually(done, timeout=60, what="every subscriber to catch up")


@pytest.mark.slow
@pytest.mark.process
async def test_numbered_sequence_through_every_fault(
    start_gateway: Callable[..., Gateway],
    redis_with_aof: RedisServer,
    proxy: TcpProxy,
    http: aiohttp.ClientSession,
) -> None:
    redis = redis_with_aof
    first, second = start_gateway(proxy.url), start_gateway(proxy.url)
    followers: list[Follower] = [
        kind(http, gateway, TYPE)
        for gateway in (first, second)
        for kind in (WsFollower, SseFollower)
    ]
    for follower in followers:
        follower.start()
    await eventually(lambda: all(f.connections for f in followers), what="subscribers")
    sequence = Sequence(http, redis.url)
    try:
        # 1. All well.
        await sequence.run(first, 40)
        await caught_up(followers, sequence)

        # 2. A gateway is killed and comes back on its port; its clients resume.
        second.stop(kill=True)
        await sequence.run(first, 30)
        await asyncio.to_thread(second.start)
        await sequence.run(second, 10)
        await caught_up(followers, sequence)

        # 3. Redis freezes: the gateway answers 503 although the write may
        # still happen; the retry with the same key must not write it again.
        assert redis.process is not None
        redis.process.send_signal(signal.SIGSTOP)
        refusals = sequence.refusals
        frozen = asyncio.create_task(sequence.run(first, 1, raw=False))
        await eventually(lambda: sequence.refusals > refusals, timeout=30, what="a 503")
        redis.process.send_signal(signal.SIGCONT)
        await frozen
        await sequence.run(first, 10)
        await caught_up(followers, sequence)

        # 4. Redis restarts and loads its AOF: nothing is lost.
        redis.stop()
        refusals = sequence.refusals
        down = asyncio.create_task(sequence.run(second, 3, raw=False))
        await eventually(lambda: sequence.refusals > refusals, what="refusals while down")
        await asyncio.to_thread(redis.start, appendonly=True)
        await down
        await sequence.run(second, 10)
        await caught_up(followers, sequence)
        assert not any(f.signals for f in followers), [f.signals for f in followers]

        # 5. Redis comes back from an older snapshot: what came after it is gone.
        await sequence.raw.save()
        await sequence.run(first, 20)
        await caught_up(followers, sequence)
        received_before_rollback = {f.name: len(f.ids) for f in followers}
        redis.stop(kill=True)
        shutil.rmtree(redis.directory / "appendonlydir", ignore_errors=True)
        await asyncio.to_thread(redis.start, appendonly=False)
        await sequence.run(first, 20)
        await caught_up(followers, sequence)
        for follower in followers:
            told = [n for _, n in follower.signals if n >= received_before_rollback[follower.name]]
            assert told, f"{follower.name} was never told that history was lost"

        # 6. The proxy delays every byte, then cuts every connection, twice.
        proxy.delay = 0.05
        await sequence.run(second, 20)
        proxy.cut()
        await sequence.run(first, 20)
        proxy.delay = 0.0
        proxy.cut()
        await sequence.run(second, 20)
        await caught_up(followers, sequence)
    finally:
        for follower in followers:
            await follower.stop()
        await sequence.raw.aclose()

    for follower in followers:
        tally = follower.tally(sequence.published)
        assert (tally.lost, tally.duplicated, tally.reordered) == ([], [], []), follower.name
    assert proxy.cuts == 2

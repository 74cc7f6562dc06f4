"""Each event reaches a connection once, however its subscriptions, replays and states overlap."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.client.reporters import AsyncReporter
from relay.protocol.entries import StreamEntry
from relay.protocol.event import ProgressEvent
from relay.protocol.frames import Envelope, Subscribe
from relay.protocol.stream_ids import START, StreamId
from relay.server.app import build_relay
from relay.server.coverage import Coverage, matches
from relay.server.gateway import Gateway as GatewayParts
from relay.server.settings import Settings
from tests.conftest import RedisServer
from tests.helpers import (
    Gateway,
    event,
    events_read,
    eventually,
    read_back,
    receive,
    receive_events,
    serving,
    subscribe,
)
from tests.server.test_catchup import fast, post
from tests.server.test_subscriber import FakeSocket, make

# Every test here runs on a single Redis and on a Redis Cluster.
pytestmark = pytest.mark.stores

SESSIONS = ("s1", "s2", "s3")


async def publish_batch(http: aiohttp.ClientSession, base: str, events: list[Any]) -> list[str]:
    """Publish ``events`` of type map, and wait until the gateway's reader has read them."""
    before = await events_read(http, base)
    async with http.post(f"{base}/api/workflows/progress/batch", json=events) as response:
        assert response.status == 202, await response.text()
        ids = [str(entry_id) for entry_id in (await response.json())["ids"]]
    await read_back(http, base, before + len(events))
    return ids


async def thirty(http: aiohttp.ClientSession, base: str) -> list[str]:
    """30 running events, ten per session, interleaved."""
    return await publish_batch(
        http, base, [event(session_id=SESSIONS[n % 3], progress=n) for n in range(30)]
    )


async def ask(ws: aiohttp.ClientWebSocketResponse, **fields: Any) -> None:
    """Send a subscribe action without waiting for its answer."""
    await ws.send_json({"action": "subscribe", **fields})


async def collect(
    ws: aiohttp.ClientWebSocketResponse, count: int
) -> tuple[list[dict[str, Any]], list[str]]:
    """The next ``count`` event ids, and the control frames that came with them."""
    controls: list[dict[str, Any]] = []
    ids: list[str] = []
    while len(ids) < count:
        item = await receive(ws)
        if "event" in item:
            ids.append(item["id"])
        else:
            controls.append(item)
    return controls, ids


async def nothing_more(
    ws: aiohttp.ClientWebSocketResponse, http: aiohttp.ClientSession, base: str
) -> list[dict[str, Any]]:
    """The next event the connection gets is a new live one: nothing else was queued.

    Returns the control frames that came before it.
    """
    live = await post(http, base, session_id="s1", progress=99)
    controls, got = await collect(ws, 1)
    assert got == [live]
    return controls


async def test_overlapping_replays_deliver_each_event_once(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    async with serving(fast(redis_url)) as base:
        ids = await thirty(http, base)
        async with http.ws_connect(f"{base}/ws") as ws:
            await ask(ws, workflow_type="map", since="0-0")
            await ask(ws, workflow_type="map", since="0-0")
            await ask(ws, workflow_type="map", session_id="s1", since="0-0")
            controls, got = await collect(ws, 30)
            assert got == ids
            controls += await nothing_more(ws, http, base)
        assert [c["recovered"] for c in controls if c["type"] == "subscribed"] == [True] * 3


async def test_a_replay_skips_what_a_live_subscription_already_sent(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    async with serving(fast(redis_url)) as base:
        before = await thirty(http, base)
        async with http.ws_connect(f"{base}/ws") as ws:
            await subscribe(ws, workflow_type="map")
            during = await publish_batch(
                http, base, [event(session_id=SESSIONS[n % 3], progress=n) for n in range(9)]
            )
            assert [f["id"] for f in await receive_events(ws, 9)] == during
            await subscribe(ws, workflow_type="map", session_id="s2", since="0-0")
            _, replayed = await collect(ws, 10)
            # s2's events from before the type subscription; the later ones came live
            assert replayed == before[1::3]
            await nothing_more(ws, http, base)


async def test_repeated_snapshots_and_late_joiners_send_each_state_once(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    async with serving(fast(redis_url)) as base:
        ids = await thirty(http, base)
        latest = ids[-3:]  # one per session
        async with http.ws_connect(f"{base}/ws") as ws:
            await ask(ws, workflow_type="map", snapshot=True)
            await ask(ws, workflow_type="map", snapshot=True)
            await ask(ws, workflow_type="map", session_id="s1")
            await ask(ws, workflow_type="*", snapshot=True)
            _, got = await collect(ws, 3)
            assert sorted(got) == sorted(latest)
            await nothing_more(ws, http, base)


async def test_a_replay_after_a_snapshot_skips_the_states_already_sent(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    async with serving(fast(redis_url)) as base:
        ids = await thirty(http, base)
        async with http.ws_connect(f"{base}/ws") as ws:
            await ask(ws, workflow_type="map", snapshot=True)
            await ask(ws, workflow_type="map", since="0-0")
            _, got = await collect(ws, 30)
            counts = Counter(got)
            assert sorted(counts) == sorted(ids)
            assert set(counts.values()) == {1}
            await nothing_more(ws, http, base)


async def test_a_late_joiner_gets_the_state_a_type_subscription_did_not_send(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    async with serving(fast(redis_url)) as base:
        ids = await thirty(http, base)
        async with http.ws_connect(f"{base}/ws") as ws:
            await subscribe(ws, workflow_type="map")
            await subscribe(ws, workflow_type="map", session_id="s3")
            # s3's latest predates the type subscription, so only the late join sends it
            assert [f["id"] for f in await receive_events(ws, 1)] == [ids[-1]]
            await nothing_more(ws, http, base)


async def test_after_unsubscribing_a_replay_is_sent_again(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    async with serving(fast(redis_url)) as base:
        ids = await thirty(http, base)
        async with http.ws_connect(f"{base}/ws") as ws:
            await ask(ws, workflow_type="map", since=ids[19])
            assert (await collect(ws, 10))[1] == ids[20:]
            await ws.send_json({"action": "unsubscribe", "workflow_type": "map"})
            assert (await receive(ws))["type"] == "unsubscribed"
            await ask(ws, workflow_type="map", since=ids[24])
            assert (await collect(ws, 5))[1] == ids[25:]
            await nothing_more(ws, http, base)


def envelope(n: int, session: str = "s1", *, terminal: bool = False) -> Envelope:
    return Envelope(f"{n}-0", "map", session, terminal, f"frame-{session}-{n}")


async def test_a_mark_is_filtered_when_the_writer_reaches_it_not_when_it_is_filled() -> None:
    """Two replays filled in the opposite order still send everything, each once."""
    sock = FakeSocket()
    sub = make(sock, limit=100)
    whole, one = ("map", None), ("map", "s1")
    first = sub.hold(whole)
    sub.cover(whole, StreamId(4, 0))
    second = sub.hold(one)
    sub.cover(one, StreamId(4, 0))
    history = [envelope(n, "s1" if n % 2 else "s2") for n in range(1, 5)]
    # The later mark is filled first: it must not count as delivered before the earlier one.
    sub.release(second, ["s1 replayed", *history[0::2]], lower_to=START)
    sub.release(first, ["map replayed", *history], lower_to=START)
    sub.start()
    await eventually(lambda: "s1 replayed" in sock.sent)
    assert sock.sent == [
        "map replayed",
        "frame-s1-1",
        "frame-s2-2",
        "frame-s1-3",
        "frame-s2-4",
        "s1 replayed",
    ]
    assert isinstance(sub.subscriptions[one], Coverage)
    await sub.stop()


@pytest.mark.slow
async def test_a_resume_before_the_reader_starts_waits_for_it(
    own_redis: RedisServer,
    start_gateway: Callable[..., Gateway],
    http: aiohttp.ClientSession,
) -> None:
    own_redis.stop()
    own_redis.start(appendonly=True)  # the entries must survive the restart below
    async with AsyncReporter(own_redis.url) as reporter:
        ids = [await reporter.report(f"s{n % 5}", "map", "step", n) for n in range(50)]
    own_redis.stop()
    gateway = start_gateway(own_redis.url, ready=False, RELAY_READ_BLOCK_MS="100")
    own_redis.start(appendonly=True)
    async with http.get(f"{gateway.url}/readyz") as response:
        assert response.status == 503  # the reader has not started yet
    async with http.ws_connect(gateway.ws_url) as ws:
        answer = await subscribe(ws, workflow_type="map", since=ids[9])
        assert answer["recovered"] is True
        assert [f["id"] for f in await receive_events(ws, 40, timeout=20)] == ids[10:]
        await nothing_more(ws, http, gateway.url)


async def test_a_resume_answers_not_recovered_when_the_reader_never_starts(
    own_redis: RedisServer,
) -> None:
    own_redis.stop()  # nothing to read from: the reader cannot start
    relay = build_relay(Settings(redis_url=own_redis.url, replay_wait=0.2))
    sock = FakeSocket()
    sub = make(sock, limit=100)
    sub.start()
    frame = Subscribe(action="subscribe", workflow_type="map", since="1-0")
    replay = relay.catchup.subscribe(sub, frame)
    assert replay is not None
    await replay
    await eventually(lambda: sock.sent != [])
    assert [orjson.loads(text) for text in sock.sent] == [
        {"type": "subscribed", "workflow_type": "map", "session_id": None, "recovered": False}
    ]
    await sub.stop()
    await relay.connections.aclose()


class CountedReads:
    """Stands in for a store's history reads: counts those in progress, holds them at a gate."""

    def __init__(self, relay: GatewayParts) -> None:
        self.read = relay.store.history
        self.active = 0
        self.most = 0
        self.gate = asyncio.Event()
        relay.store.history = self  # type: ignore[method-assign]

    async def __call__(
        self, stream_key: str, after: StreamId, upto: StreamId | None, count: int
    ) -> list[StreamEntry]:
        self.active += 1
        self.most = max(self.most, self.active)
        try:
            await self.gate.wait()
            return await self.read(stream_key, after, upto, count)
        finally:
            self.active -= 1


@pytest.fixture
async def running(redis_url: str) -> AsyncIterator[GatewayParts]:
    """A gateway's parts with its reader running, two replays allowed at once."""
    relay = build_relay(Settings(redis_url=redis_url, max_concurrent_replays=2))
    task = asyncio.create_task(relay.reader.run())
    await asyncio.wait_for(relay.reader.started.wait(), 10)
    yield relay
    await relay.reader.stop(task)
    await relay.connections.aclose()


async def resume_all(relay: GatewayParts, count: int) -> tuple[list[str], list[FakeSocket], Any]:
    receipts = await relay.store.publish(
        [
            ProgressEvent(
                session_id=f"s{n % 7}", workflow_type="map", step="step", progress=n % 100
            )
            for n in range(300)
        ]
    )
    ids = [receipt.id for receipt in receipts]
    await eventually(
        lambda: relay.reader.live_from(relay.keys.stream("map")) == StreamId.parse(ids[-1])
    )
    socks = [FakeSocket() for _ in range(count)]
    subs = [make(sock, limit=1_000) for sock in socks]
    frame = Subscribe(action="subscribe", workflow_type="map", since=ids[0])
    replays = [relay.catchup.subscribe(sub, frame) for sub in subs]
    return ids, socks, (subs, replays)


async def test_concurrent_replays_are_bounded_and_all_complete(running: GatewayParts) -> None:
    reads = CountedReads(running)
    ids, socks, (subs, replays) = await resume_all(running, 10)
    for sub in subs:
        sub.start()
    await eventually(lambda: reads.active == 2 and running.catchup.replays == 10)
    reads.gate.set()
    await asyncio.gather(*replays)
    for sock in socks:

        def all_sent(sock: FakeSocket = sock) -> bool:
            return len(sock.sent) == len(ids)

        await eventually(all_sent)
        assert [orjson.loads(text)["id"] for text in sock.sent[1:]] == ids[1:]
    assert reads.most == 2
    for sub in subs:
        await sub.stop()


async def test_a_replay_permit_is_held_until_the_writer_takes_it_or_the_subscriber_stops(
    running: GatewayParts,
) -> None:
    reads = CountedReads(running)
    reads.gate.set()
    ids, socks, (subs, replays) = await resume_all(running, 3)
    # Nobody is sending yet: two filled replays keep their permits, the third waits.
    await asyncio.gather(*replays[:2])
    await eventually(lambda: running.catchup.replays == 3)
    assert not replays[2].done()
    await subs[0].stop()
    await replays[2]
    subs[1].start()
    subs[2].start()
    await eventually(lambda: len(socks[1].sent) == len(socks[2].sent) == len(ids))
    assert socks[0].sent == []
    for sub in subs[1:]:
        await sub.stop()


async def test_a_floor_holds_back_only_the_events_of_its_own_subscription() -> None:
    sock = FakeSocket()
    sub = make(sock, limit=100)
    other, resumed = ("map", "s2"), ("map", "s1")
    sub.cover(other, StreamId(1, 0))
    mark = sub.hold(resumed)
    sub.cover(resumed, StreamId(1, 0))  # the reader is behind the client's since (5-0)
    sub.release(mark, ["resumed"], lower_to=StreamId(5, 0), floor=StreamId(5, 0))
    for n in (3, 4, 6):
        sub.deliver(envelope(n, "s1"))
        sub.deliver(envelope(n, "s2"))
    sub.start()
    await eventually(lambda: "frame-s2-6" in sock.sent)
    assert sock.sent == ["resumed", "frame-s2-3", "frame-s2-4", "frame-s1-6", "frame-s2-6"]
    await sub.stop()


class Connection:
    """One connection driven the way the hub and catch-up drive it, over a model stream."""

    def __init__(self) -> None:
        self.sock = FakeSocket()
        self.sub = make(self.sock, limit=10_000)
        self.stream: list[Envelope] = []
        self.keys: set[tuple[str, str | None]] = set()
        self.pending: list[tuple[Any, list[Envelope | str], StreamId]] = []
        self.required: set[str] = set()

    @property
    def position(self) -> StreamId:
        return self.stream[-1].key if self.stream else START

    def publish(self, session: str, terminal: bool) -> None:
        envelope = Envelope(f"{len(self.stream) + 1}-0", "map", session, terminal, "")
        envelope._frame = envelope.id  # the frame is the id, to tell them apart
        self.stream.append(envelope)
        if any(matches(key, envelope) for key in self.keys):
            self.sub.deliver(envelope)  # the hub routes an event to a connection once
            self.required.add(envelope.id)

    def subscribe(self, session: str | None, since: int | None, snapshot: bool) -> None:
        key = ("map", session)
        live = self.position
        if since is not None:
            since_key = StreamId(min(since, len(self.stream)), 0)
            history: list[Envelope | str] = [
                e for e in self.stream if since_key < e.key and matches(key, e)
            ]
            self.required |= {e.id for e in history if isinstance(e, Envelope)}
            self.pending.append((self.sub.hold(key), ["subscribed", *history], since_key))
        else:
            latest: dict[str, Envelope] = {}
            for e in self.stream:
                if matches(key, e):
                    latest[e.session_id] = e
            state = [
                e for e in latest.values() if session is not None or (snapshot and not e.terminal)
            ]
            self.required |= {e.id for e in state}
            if state:
                self.sub.place(key, ["subscribed", *sorted(state, key=lambda e: e.key)], live)
            else:
                self.sub.deliver("subscribed")
        self.keys.add(key)
        self.sub.cover(key, live)

    def fill(self, which: int) -> None:
        if self.pending:
            mark, items, since_key = self.pending.pop(which % len(self.pending))
            self.sub.release(mark, items, lower_to=since_key)


# Two sessions and early resume points, so that subscriptions overlap often.
OPERATION = st.one_of(
    st.tuples(st.just("publish"), st.sampled_from(SESSIONS[:2]), st.booleans()),
    st.tuples(
        st.just("subscribe"),
        st.sampled_from([None, *SESSIONS[:2]]),
        st.one_of(st.none(), st.integers(0, 3)),
        st.booleans(),
    ),
    st.tuples(st.just("fill"), st.integers(0, 5)),
    st.tuples(st.just("send")),
)


async def play(operations: list[tuple[Any, ...]]) -> None:
    """Run ``operations`` on one connection; each wanted event must be sent, and once."""
    conn = Connection()
    for operation in operations:
        kind, *args = operation
        if kind == "publish":
            conn.publish(*args)
        elif kind == "subscribe":
            conn.subscribe(*args)
        elif kind == "fill":
            conn.fill(*args)
        else:
            conn.sub.start()
            await asyncio.sleep(0)
    while conn.pending:
        conn.fill(0)
    conn.sub.start()
    await eventually(lambda: conn.sub.queued == 0)
    await asyncio.sleep(0)  # the writer's last send
    sent = [frame for frame in conn.sock.sent if frame != "subscribed"]
    assert len(sent) == len(set(sent)), sent
    assert conn.required <= set(sent), sorted(conn.required - set(sent))
    await conn.sub.stop()


@pytest.mark.slow
@settings(max_examples=400)
@given(operations=st.lists(OPERATION, max_size=30))
def test_any_mix_of_subscriptions_gets_every_event_it_wants_once(
    operations: list[tuple[Any, ...]],
) -> None:
    asyncio.run(play(operations))


async def test_subscribing_to_a_session_again_keeps_what_its_first_state_sent() -> None:
    # The first state sent s1's first event; the second, its second (which had
    # come live meanwhile). A replay of the whole type then has both already.
    await play(
        [
            ("publish", "s1", False),
            ("subscribe", "s1", None, False),
            ("publish", "s1", False),
            ("subscribe", "s1", None, False),
            ("subscribe", None, 0, False),
        ]
    )

"""The per-subscriber outbox: its own writer, conflation, and closing stuck clients."""

from __future__ import annotations

import asyncio

from relay.protocol.frames import Envelope
from relay.protocol.stream_ids import StreamId
from relay.server.subscriber import CLOSE_SLOW_CONSUMER, Subscriber, websocket_batch
from tests.helpers import eventually


def make(sock: FakeSocket, *, limit: int, send_timeout: float = 30.0) -> Subscriber:
    """A subscriber writing to ``sock``; batched frames are joined by newlines to count them."""
    return Subscriber(sock.send, sock.close, limit=limit, send_timeout=send_timeout, join="\n".join)


def envelope(n: int, session: str = "s1", *, terminal: bool = False) -> Envelope:
    return Envelope(f"{n}-0", "map", session, terminal, f"frame-{session}-{n}")


class FakeSocket:
    """Records frames; can be held so nothing is sent, like a client that stopped reading."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed: tuple[int, str] | None = None
        self.gate = asyncio.Event()
        self.gate.set()

    async def send(self, message: str) -> None:
        await self.gate.wait()
        self.sent.extend(message.split("\n"))  # see make(): batches are joined by newlines

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


async def test_frames_are_sent_in_order() -> None:
    sock = FakeSocket()
    sub = make(sock, limit=100)
    sub.start()
    for n in range(10):
        sub.deliver(envelope(n))
    await eventually(lambda: len(sock.sent) == 10)
    assert sock.sent == [f"frame-s1-{n}" for n in range(10)]
    await sub.stop()


async def test_overflow_keeps_newest_per_session_and_every_terminal() -> None:
    sock = FakeSocket()
    sock.gate.clear()
    sub = make(sock, limit=20)
    sub.start()
    sub.deliver(envelope(0, "a"))
    await eventually(lambda: sub.queued == 0)  # the writer holds item 0, blocked on send
    for n in range(1, 30):
        sub.deliver(envelope(n, "a" if n % 2 else "b", terminal=(n == 7)))
    sub.deliver("control")
    assert sub.conflated > 0
    sock.gate.set()
    await eventually(lambda: sub.queued == 0 and "control" in sock.sent)
    assert sock.closed is None
    assert "frame-a-7" in sock.sent  # terminal survived conflation
    assert sock.sent[-3:] == ["frame-b-28", "frame-a-29", "control"]
    ids = [int(frame.rsplit("-", 1)[1]) for frame in sock.sent if frame.startswith("frame")]
    assert ids == sorted(ids)
    await sub.stop()


async def test_subscriber_too_far_behind_is_closed_with_slow_consumer_code() -> None:
    sock = FakeSocket()
    sock.gate.clear()
    sub = make(sock, limit=10)
    sub.start()
    for n in range(12):
        sub.deliver(envelope(n, f"s{n}"))  # all different sessions: nothing to conflate
    sock.gate.set()
    await eventually(lambda: sock.closed is not None)
    assert sock.closed == (CLOSE_SLOW_CONSUMER, "slow consumer")
    sub.deliver(envelope(99))
    assert sub.queued == 0
    await sub.stop()


async def test_socket_that_accepts_nothing_is_closed_after_send_timeout() -> None:
    sock = FakeSocket()
    sock.gate.clear()
    sub = make(sock, limit=10, send_timeout=30)
    sub.start()
    sub.deliver(envelope(1))
    await eventually(lambda: sub.queued == 0)  # the writer holds item 1, blocked on send
    now = asyncio.get_running_loop().time()
    sub.check_send(now + 29)
    await asyncio.sleep(0)
    assert sock.closed is None
    sub.check_send(now + 31)
    await eventually(lambda: sock.closed is not None)
    assert sock.closed == (CLOSE_SLOW_CONSUMER, "slow consumer")
    assert sub.dropped_slow
    await sub.stop()


async def test_a_stalled_subscriber_does_not_delay_another() -> None:
    stalled, healthy = FakeSocket(), FakeSocket()
    stalled.gate.clear()
    subs = [make(s, limit=50) for s in (stalled, healthy)]
    for sub in subs:
        sub.start()
    for n in range(200):
        for sub in subs:
            sub.deliver(envelope(n, f"s{n % 5}"))
        if n % 10 == 9:
            await asyncio.sleep(0)  # events arrive in reader batches, between which writers run
    await eventually(lambda: len(healthy.sent) == 200)
    assert stalled.sent == []
    assert subs[0].queued <= 50
    for sub in subs:
        await sub.stop()


def test_websocket_batches_are_json_arrays_in_order() -> None:
    assert websocket_batch(['{"a":1}']) == '{"a":1}'
    assert websocket_batch(['{"a":1}', '{"b":2}']) == '[{"a":1},{"b":2}]'


async def test_replay_floor_drops_what_the_client_has_only_behind_the_mark() -> None:
    sock = FakeSocket()
    sub = make(sock, limit=100)
    sub.cover(("map", None), None)
    sub.deliver(envelope(1))  # queued before the replay: another subscription's
    mark = sub.hold(("map", None))
    for n in (2, 3, 4, 5):  # routed live while the history was being read
        sub.deliver(envelope(n))
    sub.release(mark, ["subscribed"], floor=StreamId(3, 0))
    sub.deliver(envelope(3, "s2"))  # the reader catching up, still below the floor
    sub.deliver(envelope(6))
    sub.start()
    await eventually(lambda: len(sock.sent) == 5)
    assert sock.sent == ["frame-s1-1", "subscribed", "frame-s1-4", "frame-s1-5", "frame-s1-6"]
    await sub.stop()


async def test_an_idle_subscriber_holds_no_task_and_finished_means_closed() -> None:
    sock = FakeSocket()
    sub = make(sock, limit=100)
    baseline = len(asyncio.all_tasks())
    sub.start()
    assert len(asyncio.all_tasks()) == baseline
    sub.deliver(envelope(1))
    assert len(asyncio.all_tasks()) == baseline + 1  # a writer, only while there is work
    await eventually(lambda: sock.sent == ["frame-s1-1"])
    await eventually(lambda: len(asyncio.all_tasks()) == baseline)
    assert not await sub.finished(0.01)  # idle is not over
    sub.close_later(1001, "bye")
    assert await sub.finished(5)
    assert sock.closed == (1001, "bye")
    sub.deliver(envelope(2))
    assert len(asyncio.all_tasks()) == baseline
    await sub.stop()

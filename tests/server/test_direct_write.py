"""The direct path: frames written straight to the transport, and the queued writer behind it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import orjson
import pytest

from relay.protocol.frames import Envelope, websocket_text_frame
from relay.protocol.stream_ids import StreamId
from relay.server import socketio_protocol as sio
from relay.server.frame_sink import FrameSink
from relay.server.hub import Hub
from relay.server.settings import Settings
from relay.server.socketio import EngineSession, Sessions, render
from relay.server.subscriber import (
    CLOSE_SLOW_CONSUMER,
    MAX_BATCH,
    Flusher,
    Subscriber,
    websocket_batch,
)
from tests.helpers import eventually


def envelope(n: int, session: str = "s1", *, terminal: bool = False) -> Envelope:
    return Envelope(f"{n}-0", "map", session, terminal, f'{{"n":{n}}}')


class FakeConnection:
    """A transport that can be paused, and the queued sends of the same connection.

    Both record into one list of frame texts, so the order on the wire is
    what the test reads.
    """

    def __init__(self) -> None:
        self.wire: list[str] = []
        self.paused = False
        self.writes = 0
        self.sends = 0
        self.closed: tuple[int, str] | None = None
        self.gate = asyncio.Event()
        self.gate.set()

    def writable(self) -> bool:
        return not self.paused

    @staticmethod
    def encode(items: list[Envelope | str]) -> bytes:
        texts = [item.frame if isinstance(item, Envelope) else item for item in items]
        return "".join(text + "\n" for text in texts).encode()

    def write(self, data: bytes) -> None:
        assert not self.paused, "a direct write while the transport is paused"
        self.writes += 1
        self.wire.extend(data.decode().splitlines())

    async def send(self, text: str) -> None:
        await self.gate.wait()
        self.sends += 1
        self.wire.extend(text.split("\n"))

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


def make(
    conn: FakeConnection,
    *,
    limit: int = 100,
    send_timeout: float = 30.0,
    flusher: Flusher | None = None,
) -> Subscriber:
    return Subscriber(
        conn.send,
        conn.close,
        limit=limit,
        send_timeout=send_timeout,
        join="\n".join,
        direct=conn,
        flusher=flusher or Flusher(),
    )


def frames(*numbers: int) -> list[str]:
    return [f'{{"n":{n}}}' for n in numbers]


async def test_what_one_callback_routes_goes_out_in_one_write() -> None:
    conn = FakeConnection()
    sub = make(conn)
    sub.start()
    for n in range(5):
        sub.deliver(envelope(n))
    assert conn.wire == []  # written once the callback routing them is done
    await eventually(lambda: len(conn.wire) == 5)
    assert conn.wire == frames(0, 1, 2, 3, 4)
    assert (conn.writes, conn.sends, sub.delivered) == (1, 0, 5)
    await sub.stop()


async def test_a_paused_transport_hands_over_to_the_writer_in_order() -> None:
    conn = FakeConnection()
    sub = make(conn)
    sub.start()
    sub.deliver(envelope(0))
    await eventually(lambda: len(conn.wire) == 1)
    # Paused: the writer sends, and stays stuck on its send.
    conn.paused = True
    conn.gate.clear()
    sub.deliver(envelope(1))
    sub.deliver(envelope(2))
    await eventually(lambda: sub.queued == 0)
    # Writable again while the writer still holds 1 and 2: 3 must wait behind them.
    conn.paused = False
    sub.deliver(envelope(3))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert conn.wire == frames(0)
    conn.gate.set()
    await eventually(lambda: len(conn.wire) == 4)
    # The writer is done: the next event goes straight to the transport again.
    writes = conn.writes
    sub.deliver(envelope(4))
    await eventually(lambda: len(conn.wire) == 5)
    assert conn.wire == frames(0, 1, 2, 3, 4)
    assert conn.writes == writes + 1
    assert sub.delivered == 5
    await sub.stop()


async def test_nothing_passes_a_replay_mark_directly() -> None:
    conn = FakeConnection()
    sub = make(conn)
    sub.start()
    key = ("map", None)
    sub.cover(key, None)
    mark = sub.hold(key)
    sub.deliver(envelope(5))
    sub.deliver(envelope(6))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert conn.wire == []
    sub.release(mark, ["subscribed", envelope(3), envelope(4)])
    await eventually(lambda: len(conn.wire) == 5)
    assert conn.wire == ["subscribed", *frames(3, 4, 5, 6)]
    # The mark gone, live events go direct again.
    writes = conn.writes
    sub.deliver(envelope(7))
    await eventually(lambda: len(conn.wire) == 6)
    assert conn.writes == writes + 1
    await sub.stop()


async def stuck(conn: FakeConnection, **settings: Any) -> Subscriber:
    """A started subscriber behind a paused transport whose writer holds one event, stuck."""
    conn.paused = True
    conn.gate.clear()
    sub = make(conn, **settings)
    sub.start()
    sub.deliver(envelope(0))
    await eventually(lambda: sub.queued == 0)
    return sub


async def test_a_slow_consumer_behind_a_paused_transport_is_still_closed() -> None:
    conn = FakeConnection()
    sub = await stuck(conn, limit=20)
    for n in range(1, 40):
        sub.deliver(envelope(n, session=f"s{n}"))
    assert sub.dropped_slow
    conn.gate.set()
    await eventually(lambda: conn.closed is not None)
    assert conn.closed == (CLOSE_SLOW_CONSUMER, "slow consumer")
    assert conn.writes == 0
    await sub.stop()


async def test_a_stuck_send_behind_a_paused_transport_is_still_detected() -> None:
    conn = FakeConnection()
    sub = await stuck(conn, send_timeout=5.0)
    clock = asyncio.get_running_loop().time
    sub.check_send(clock() + 1)
    assert conn.closed is None
    sub.check_send(clock() + 10)
    await eventually(lambda: conn.closed is not None)
    assert conn.closed == (CLOSE_SLOW_CONSUMER, "slow consumer")
    assert sub.dropped_slow
    await sub.stop()


async def test_closing_goes_through_the_writer() -> None:
    conn = FakeConnection()
    sub = make(conn)
    sub.start()
    sub.deliver(envelope(0))
    sub.close_later(CLOSE_SLOW_CONSUMER, "slow consumer")
    await eventually(lambda: conn.closed is not None)
    assert conn.wire == []  # what was queued is dropped, as before
    assert await sub.finished(1.0)


class BrokenConnection(FakeConnection):
    @staticmethod
    def encode(items: list[Envelope | str]) -> bytes:
        raise ValueError("cannot encode")


async def test_one_connection_failing_leaves_the_others_written() -> None:
    flusher = Flusher()
    broken, healthy = BrokenConnection(), FakeConnection()
    subs = [make(broken, flusher=flusher), make(healthy, flusher=flusher)]
    for sub in subs:
        sub.start()
        sub.deliver(envelope(0))
    await eventually(lambda: healthy.wire == frames(0))
    for sub in subs:
        await sub.stop()


@pytest.mark.parametrize(
    ("size", "header"),
    [
        (0, b"\x81\x00"),
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),
        (65535, b"\x81\x7e\xff\xff"),
        (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_a_websocket_frame_is_its_header_and_the_text(size: int, header: bytes) -> None:
    payload = b"x" * size
    assert websocket_text_frame(payload) == header + payload


def engine_session() -> EngineSession:
    gateway: Any = SimpleNamespace(settings=Settings(), hub=Hub())
    session = EngineSession(gateway, Sessions(), "socketio:test", None)
    session._offset = sio.Offset(1_764_693_000_000)
    return session


def progress(entry_id: str, workflow_type: str, session: str, **data: Any) -> Envelope:
    body = orjson.dumps({"session_id": session, "workflow_type": workflow_type, **data}).decode()
    name = f"workflow:progress:{workflow_type}"
    frame = f'{{"event":"{name}","id":"{entry_id}","data":{body}}}'
    return Envelope(entry_id, workflow_type, session, False, frame)


async def test_socketio_frames_written_directly_are_the_packets_rendered_before() -> None:
    items: list[Envelope | str] = [
        sio.connect_packet("sid", "pid"),
        '{"type":"subscribed","workflow_type":"map","session_id":null}',
        progress("1764693000123-0", "map", "s1", step="a", progress=1),
        progress("1764693000124-3", "plan", "s2", step="b", progress=2.5, metadata={"k": "é"}),
        sio.PING,
        progress("1764693000125-0", "map", "s1", step="c", progress=100),
    ]
    direct, queued = engine_session(), engine_session()
    wire = [direct.encode([item]) for item in items]
    before = [websocket_text_frame(queued._render(item).encode()) for item in items]
    assert wire == before
    assert direct._offset == queued._offset
    assert engine_session().encode(items) == b"".join(before)
    # The packet of the first event, as the protocol spells it.
    offset = sio.Offset(1_764_693_000_000, {"map": StreamId.from_redis("1764693000123-0")})
    expected = render(items[2], offset).encode()
    assert wire[2] == websocket_text_frame(expected)
    await direct.subscriber.stop()
    await queued.subscriber.stop()


class RecordingSink:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> None:
        self.writes.append(data)


async def test_a_socketio_backlog_goes_out_in_one_write_one_frame_per_packet() -> None:
    session = engine_session()
    sink = RecordingSink()
    session.ws, session._sink = cast(Any, object()), cast(Any, sink)
    await session._send(sio.encode_payload([sio.PING, '42["x",{}]']))
    assert sink.writes == [websocket_text_frame(b"2") + websocket_text_frame(b'42["x",{}]')]
    await session.subscriber.stop()


def test_a_websocket_backlog_is_the_writers_json_arrays_shared_by_connections() -> None:
    events = [envelope(n) for n in range(MAX_BATCH + 1)]
    items: list[Envelope | str] = ['{"type":"pong"}', *events]
    data = FrameSink.encode(items)
    first = websocket_batch(['{"type":"pong"}', *frames(*range(MAX_BATCH - 1))])
    second = websocket_batch(frames(MAX_BATCH - 1, MAX_BATCH))
    assert data == websocket_text_frame(first.encode()) + websocket_text_frame(second.encode())
    # The next connection routed the same batch gets the same bytes, built once.
    assert FrameSink.encode(list(items)) is data
    assert FrameSink.encode(items[1:]) != data
    assert FrameSink.encode([events[0]]) is events[0].websocket_frame


class SlowWebSocket:
    """A WebSocket whose every send waits a turn of the loop, for packets to arrive meanwhile."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_str(self, text: str) -> None:
        await asyncio.sleep(0)
        self.sent.append(text)


async def test_packets_queued_while_an_upgrade_sends_the_polling_backlog_are_sent_too() -> None:
    session = engine_session()
    session.push(sio.encode_payload([sio.PING, '42["a",{}]']))
    ws = SlowWebSocket()
    upgrading = asyncio.ensure_future(session.upgrade(cast(Any, ws)))
    await asyncio.sleep(0)
    session.push(sio.NOOP)
    await upgrading
    assert ws.sent == [sio.PING, '42["a",{}]', sio.NOOP]
    assert session.buffer == []
    await session.subscriber.stop()

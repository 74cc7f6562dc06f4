"""Engine.IO v4 and Socket.IO v5 packets as text: pure encoding and decoding.

An Engine.IO packet is one digit (its type) and an optional payload. Over
HTTP long-polling several packets travel in one body, separated by the record
separator ``\\x1e``; over a WebSocket each packet is one text frame. A
Socket.IO packet is the payload of an Engine.IO ``message`` (``4``): a digit,
an optional namespace (``/name,``), an optional ack id and a JSON payload,
so an event on the main namespace reads ``42["name",{...}]``.

Binary packets are not supported: relay's events are JSON.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson

from relay.protocol.event import WORKFLOW_TYPE_PATTERN
from relay.protocol.stream_ids import STREAM_ID_PART_MAX, StreamId

# Engine.IO packet types.
OPEN = "0"
CLOSE = "1"
PING = "2"
PONG = "3"
MESSAGE = "4"
UPGRADE = "5"
NOOP = "6"

PROBE = "probe"
SEPARATOR = "\x1e"
PROTOCOL_VERSION = "4"

# Socket.IO packet types.
CONNECT = 0
DISCONNECT = 1
EVENT = 2
ACK = 3
CONNECT_ERROR = 4
BINARY_EVENT = 5
BINARY_ACK = 6

MAIN_NAMESPACE = "/"


class PacketError(ValueError):
    """A packet that does not follow the protocols; the session is closed."""


def encode_payload(packets: list[str]) -> str:
    """Engine.IO packets as one HTTP long-polling body."""
    return SEPARATOR.join(packets)


def decode_payload(body: str) -> list[str]:
    """The Engine.IO packets of one HTTP long-polling body."""
    packets = body.split(SEPARATOR)
    if any(not packet for packet in packets):
        raise PacketError("empty packet in payload")
    return packets


def open_packet(
    sid: str, *, upgrades: list[str], ping_interval: float, ping_timeout: float, max_payload: int
) -> str:
    """The handshake: the session id and the heartbeat (given in seconds, sent in ms)."""
    handshake = {
        "sid": sid,
        "upgrades": upgrades,
        "pingInterval": round(ping_interval * 1000),
        "pingTimeout": round(ping_timeout * 1000),
        "maxPayload": max_payload,
    }
    return OPEN + orjson.dumps(handshake).decode()


@dataclass(frozen=True, slots=True)
class SocketPacket:
    """One decoded Socket.IO packet."""

    type: int
    namespace: str = MAIN_NAMESPACE
    data: Any = None
    ack_id: int | None = None


def decode_socket_packet(text: str) -> SocketPacket:
    """A Socket.IO packet from the payload of an Engine.IO message; raises PacketError."""
    if not text or not text[0].isdigit() or int(text[0]) > BINARY_ACK:
        raise PacketError("unknown Socket.IO packet type")
    kind = int(text[0])
    if kind in (BINARY_EVENT, BINARY_ACK):
        raise PacketError("binary packets are not supported")
    rest = text[1:]
    namespace = MAIN_NAMESPACE
    if rest.startswith("/"):
        namespace, comma, rest = rest.partition(",")
        if not comma:
            raise PacketError("namespace without its comma")
    digits = len(rest) - len(rest.lstrip("0123456789"))
    ack_id = int(rest[:digits]) if digits else None
    rest = rest[digits:]
    try:
        data = orjson.loads(rest) if rest else None
    except orjson.JSONDecodeError as exc:
        raise PacketError(f"payload is not valid JSON: {exc}") from None
    packet = SocketPacket(kind, namespace, data, ack_id)
    _check(packet)
    return packet


def _check(packet: SocketPacket) -> None:
    data = packet.data
    if packet.type == EVENT and not (data and isinstance(data, list) and isinstance(data[0], str)):
        raise PacketError("an event needs a non-empty array starting with its name")
    if packet.type == ACK and (packet.ack_id is None or not isinstance(data, list)):
        raise PacketError("an ack needs its id and an array")
    if packet.type == CONNECT and data is not None and not isinstance(data, dict):
        raise PacketError("connect data must be an object")


def encode_socket_packet(packet: SocketPacket) -> str:
    """A Socket.IO packet as the Engine.IO message that carries it."""
    parts = [MESSAGE, str(packet.type)]
    if packet.namespace != MAIN_NAMESPACE:
        parts.append(packet.namespace + ",")
    if packet.ack_id is not None:
        parts.append(str(packet.ack_id))
    if packet.data is not None:
        parts.append(orjson.dumps(packet.data).decode())
    return "".join(parts)


def event_packet(name: str, data_json: str, offset: str) -> str:
    """An EVENT on the main namespace: ``data_json`` (encoded JSON) and the connection's offset.

    ``name`` and ``offset`` must need no JSON escaping (relay's event names
    are validated so, and :meth:`Offset.encode` writes none).
    """
    return event_head(name, data_json) + event_tail(offset)


def event_head(name: str, data_json: str) -> str:
    """An :func:`event_packet` up to its offset: the same for every connection sent it."""
    return f'{MESSAGE}{EVENT}["{name}",{data_json},"'


def event_tail(offset: str) -> str:
    """What an :func:`event_packet` holds after its :func:`event_head`."""
    return f'{offset}"]'


def connect_packet(sid: str, pid: str) -> str:
    """The server's answer to a successful CONNECT on the main namespace.

    ``pid`` turns on the client's connection state recovery: it keeps the
    last offset it received and sends both back on its next CONNECT.
    """
    return encode_socket_packet(SocketPacket(CONNECT, data={"sid": sid, "pid": pid}))


def connect_error_packet(message: str, namespace: str = MAIN_NAMESPACE) -> str:
    """The server's answer to a refused CONNECT."""
    return encode_socket_packet(SocketPacket(CONNECT_ERROR, namespace, {"message": message}))


def ack_packet(ack_id: int, args: list[Any]) -> str:
    """The answer to an event the client sent with an ack id."""
    return encode_socket_packet(SocketPacket(ACK, data=args, ack_id=ack_id))


# Connection state recovery. An offset is the connection's resume position,
# as text the client hands back unread: a version, the time floor in ms, then
# per workflow type the newest stream id delivered, numbers in base 36:
# ``1.lk2x9c0w.map:lk2x9e4a-0.plan:lk2xa1b2-3``. Type names hold neither
# ``.`` nor ``:``, and none of it needs escaping in JSON.
OFFSET_VERSION = "1"
# Longer offsets are refused: a client's offset is untrusted input. About a
# hundred workflow types fit.
MAX_OFFSET_CHARS = 4096
MAX_PID_CHARS = 64
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_BASE36 = frozenset(_DIGITS)


@dataclass(slots=True)
class Offset:
    """Where a connection is: the newest id delivered per type, and a time floor.

    The floor (the gateway's clock in ms as the connection's subscriptions
    began) stands for every type the connection has had no event of.
    """

    floor: int
    positions: dict[str, StreamId] = field(default_factory=dict)

    def advance(self, workflow_type: str, entry_id: StreamId) -> None:
        """An event of ``workflow_type`` with ``entry_id`` was delivered."""
        known = self.positions.get(workflow_type)
        if known is None or known < entry_id:
            self.positions[workflow_type] = entry_id

    def encode(self) -> str:
        """The offset as the text an event carries."""
        positions = self.positions
        head = f"{OFFSET_VERSION}.{_base36(self.floor)}"
        if not positions:
            return head
        return ".".join([head, *(_position(*item) for item in sorted(positions.items()))])


def parse_offset(text: object) -> Offset | None:
    """The offset a client sent back; None for anything but one this module encoded."""
    if not isinstance(text, str) or not text.isascii() or len(text) > MAX_OFFSET_CHARS:
        return None
    version, *parts = text.split(".")
    floor = _number(parts[0]) if parts else None
    if version != OFFSET_VERSION or floor is None:
        return None
    offset = Offset(floor)
    for entry in parts[1:]:
        wtype, colon, entry_id = entry.partition(":")
        ms, dash, seq = entry_id.partition("-")
        ms_part, seq_part = _number(ms), _number(seq)
        if (
            not (colon and dash)
            or ms_part is None
            or seq_part is None
            or wtype in offset.positions
            or not re.fullmatch(WORKFLOW_TYPE_PATTERN, wtype)
        ):
            return None
        offset.positions[wtype] = StreamId(ms_part, seq_part)
    return offset


def resume_point(auth: dict[str, Any] | None) -> tuple[str, Offset] | None:
    """The pid and offset of a CONNECT made to recover a connection, if valid."""
    if not auth:
        return None
    pid = auth.get("pid")
    if not isinstance(pid, str) or not 0 < len(pid) <= MAX_PID_CHARS or not pid.isascii():
        return None
    offset = parse_offset(auth.get("offset"))
    return None if offset is None else (pid, offset)


# Every connection sent an event encodes the same id in its offset, one after another.
@lru_cache(maxsize=1024)
def _position(workflow_type: str, entry_id: StreamId) -> str:
    """One type's part of an offset."""
    return f"{workflow_type}:{_base36(entry_id.ms)}-{_base36(entry_id.seq)}"


@lru_cache(maxsize=1024)
def _base36(number: int) -> str:
    digits = ""
    while True:
        number, digit = divmod(number, 36)
        digits = _DIGITS[digit] + digits
        if not number:
            return digits


def _number(text: str) -> int | None:
    """A base-36 number of :func:`_base36`'s spelling within a stream id part, else None."""
    if not text or not _BASE36.issuperset(text) or (text[0] == "0" and len(text) > 1):
        return None
    number = int(text, 36)
    return number if number <= STREAM_ID_PART_MAX else None

"""Engine.IO and Socket.IO packets as the specifications spell them."""

from __future__ import annotations

import orjson
import pytest

from relay.protocol.event import ProgressEvent
from relay.protocol.frames import Envelope, error_frame
from relay.server import socketio_protocol as sio
from relay.server.auth import Grant
from relay.server.socketio import default_subscriptions, render


def test_polling_payload_round_trip() -> None:
    body = sio.encode_payload(["4hello", "2", "4world"])
    assert body == "4hello\x1e2\x1e4world"
    assert sio.decode_payload(body) == ["4hello", "2", "4world"]


def test_an_empty_packet_in_a_payload_is_refused() -> None:
    with pytest.raises(sio.PacketError):
        sio.decode_payload("4a\x1e\x1e2")


def test_open_packet_gives_the_heartbeat_in_milliseconds() -> None:
    packet = sio.open_packet(
        "abc", upgrades=["websocket"], ping_interval=25, ping_timeout=20, max_payload=1000
    )
    assert packet[0] == "0"
    assert orjson.loads(packet[1:]) == {
        "sid": "abc",
        "upgrades": ["websocket"],
        "pingInterval": 25000,
        "pingTimeout": 20000,
        "maxPayload": 1000,
    }


@pytest.mark.parametrize(
    ("text", "packet"),
    [
        ("0", sio.SocketPacket(sio.CONNECT)),
        ('0{"token":"t"}', sio.SocketPacket(sio.CONNECT, data={"token": "t"})),
        ("0/admin,", sio.SocketPacket(sio.CONNECT, "/admin")),
        ("1", sio.SocketPacket(sio.DISCONNECT)),
        ('2["foo"]', sio.SocketPacket(sio.EVENT, data=["foo"])),
        ('2/admin,["bar"]', sio.SocketPacket(sio.EVENT, "/admin", ["bar"])),
        ('212["foo",{"a":1}]', sio.SocketPacket(sio.EVENT, data=["foo", {"a": 1}], ack_id=12)),
        ('3/admin,13["bar"]', sio.SocketPacket(sio.ACK, "/admin", ["bar"], 13)),
    ],
)
def test_decode_the_specification_examples(text: str, packet: sio.SocketPacket) -> None:
    assert sio.decode_socket_packet(text) == packet


@pytest.mark.parametrize(
    "text",
    [
        "",
        "9",
        "x",
        "2",
        "2[]",
        "2[1]",
        '2{"a":1}',
        "2[",
        "0/admin",
        '0["x"]',
        "3[]",
        '51-["baz",{"_placeholder":true,"num":0}]',
    ],
)
def test_decode_refuses_what_the_specification_forbids(text: str) -> None:
    with pytest.raises(sio.PacketError):
        sio.decode_socket_packet(text)


def test_encode_the_specification_examples() -> None:
    assert sio.connect_packet("wZX3", "p1") == '40{"sid":"wZX3","pid":"p1"}'
    assert sio.connect_error_packet("Not authorized") == '44{"message":"Not authorized"}'
    assert sio.connect_error_packet("Invalid", "/admin") == '44/admin,{"message":"Invalid"}'
    assert sio.ack_packet(12, []) == "4312[]"
    assert sio.encode_socket_packet(sio.SocketPacket(sio.DISCONNECT, "/admin")) == "41/admin,"
    assert sio.event_packet("foo", '{"a":1}', "1.a") == '42["foo",{"a":1},"1.a"]'


def test_an_event_is_rendered_with_its_body_as_payload() -> None:
    progress = ProgressEvent.model_validate(
        {"session_id": "s1", "workflow_type": "map", "step": "a", "progress": 5, "ts": 7}
    )
    packet = render(Envelope.of("1-0", progress), sio.Offset(1))
    assert packet.startswith("42")
    assert orjson.loads(packet[2:]) == ["workflow:progress:map", progress.data(), "1.1"]


def test_control_frames_become_events_named_by_type_and_packets_pass_as_they_are() -> None:
    frame = error_frame("forbidden", "no")
    assert orjson.loads(render(frame, sio.Offset(1))[2:]) == ["error", orjson.loads(frame), "1.1"]
    assert render("2", sio.Offset(1)) == "2"


def test_a_client_is_subscribed_to_what_its_grant_names() -> None:
    grant = Grant("u", frozenset({"plan", "map"}), frozenset({"s9"}), None)
    assert default_subscriptions(grant) == [("map", None), ("plan", None), ("*", "s9")]
    everything = Grant("u", frozenset({"*", "map"}), frozenset(), None)
    assert default_subscriptions(everything) == [("*", None)]

"""Socket.IO offsets: the resume position an event carries, read back as untrusted input."""

from __future__ import annotations

import pytest

from relay.protocol.stream_ids import STREAM_ID_PART_MAX, StreamId
from relay.server import socketio_protocol as sio


def test_an_offset_reads_back_as_it_was_written() -> None:
    offset = sio.Offset(1_764_693_000_000)
    offset.advance("map", StreamId(1_764_693_000_123, 0))
    offset.advance("plan-b_2", StreamId(STREAM_ID_PART_MAX, STREAM_ID_PART_MAX))
    text = offset.encode()
    assert text.startswith("1.miosndc0.map:miosndff-0.plan-b_2:")
    assert sio.parse_offset(text) == offset


def test_a_type_keeps_its_newest_id() -> None:
    offset = sio.Offset(5)
    offset.advance("map", StreamId(9, 2))
    offset.advance("map", StreamId(9, 1))
    assert offset.positions == {"map": StreamId(9, 2)}
    assert sio.Offset(5).encode() == "1.5"


@pytest.mark.parametrize(
    "text",
    [
        None,
        3,
        ["1.a"],
        "",
        "1",
        "1.",
        "2.a",
        "1.A",
        "1.00",
        "1.-1",
        "1.a.map",
        "1.a.map:1",
        "1.a.map:1-",
        "1.a.Map:1-2",
        "1.a.:1-2",
        "1.a.map:1-2.map:1-3",
        "1.a.map:1-2.",
        "1.a..",
        "1." + "z" * 20,
        "1.a.map:" + "z" * 20 + "-0",
        "1.\u0661",
        "1.a.map:1-2" + ".t:1-2" * 800,
    ],
)
def test_anything_else_is_no_offset(text: object) -> None:
    assert sio.parse_offset(text) is None


def test_a_resume_needs_a_pid_and_an_offset() -> None:
    offset = "1.a.map:1-2"
    assert sio.resume_point({"pid": "p", "offset": offset, "token": "t"}) == (
        "p",
        sio.Offset(10, {"map": StreamId(1, 2)}),
    )
    assert sio.resume_point(None) is None
    assert sio.resume_point({"pid": "p"}) is None
    assert sio.resume_point({"offset": offset}) is None
    assert sio.resume_point({"pid": 7, "offset": offset}) is None
    assert sio.resume_point({"pid": "", "offset": offset}) is None
    assert sio.resume_point({"pid": "p" * 65, "offset": offset}) is None

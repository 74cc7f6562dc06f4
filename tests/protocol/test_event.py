"""The event model: the limits of the contract, the stream entry, the subscriber frame."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from relay.protocol.entries import EntryError, event_from_entry
from relay.protocol.event import (
    MalformedJson,
    ProgressEvent,
    parse_event_json,
    parse_event_list_json,
)
from relay.protocol.frames import Envelope
from relay.protocol.stream_ids import StreamId
from tests.helpers import event


def test_original_request_body_is_accepted() -> None:
    parsed = parse_event_json(orjson.dumps(event()))
    assert parsed.status == "running"
    assert parsed.metadata == {"details": "forests"}
    assert not parsed.terminal


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("session_id", ""),
        ("session_id", "x" * 129),
        ("session_id", "has space"),
        ("session_id", "slash/no"),
        ("workflow_type", "Map"),
        ("workflow_type", "-map"),
        ("workflow_type", "m" * 65),
        ("step", ""),
        ("step", "s" * 129),
        ("step", "line\nbreak"),
        ("progress", -0.1),
        ("progress", 100.5),
        ("progress", "45"),
        ("progress", True),
        ("metadata", [1, 2]),
        ("metadata", "text"),
        ("status", "paused"),
        ("error", "e" * 5000),
        ("attempt", 0),
        ("attempt", 2.5),
        ("attempt", "2"),
        ("attempt", 10**7),
    ],
)
def test_each_limit_is_enforced_and_named(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_event_json(orjson.dumps(event(**{field: value})))
    assert field in {str(err["loc"][0]) for err in caught.value.errors()}


@pytest.mark.parametrize("text", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_nan_and_infinity_are_not_json(text: bytes) -> None:
    for placeholder in (b"45", b'"forests"'):  # as progress, and inside metadata
        body = orjson.dumps(event()).replace(placeholder, text)
        with pytest.raises(MalformedJson):
            parse_event_json(body)


def test_huge_numbers_are_refused_as_progress_and_kept_as_floats_in_metadata() -> None:
    huge = b"1" + b"0" * 30
    with pytest.raises(ValidationError, match="progress"):
        parse_event_json(orjson.dumps(event()).replace(b"45", huge))
    parsed = parse_event_json(orjson.dumps(event()).replace(b'"forests"', huge))
    assert parsed.metadata == {"details": 1e30}


def test_invalid_utf8_and_deep_nesting_are_not_json() -> None:
    with pytest.raises(MalformedJson):
        parse_event_json(b'{"step": "' + bytes([0xFF]) + b'"}')
    with pytest.raises(MalformedJson):
        parse_event_json(b"[" * 5000 + b"]" * 5000)


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError, match="user"):
        parse_event_json(orjson.dumps(event(user="alice")))


def test_metadata_size_and_depth_limits() -> None:
    parse_event_json(orjson.dumps(event(metadata={"blob": "x" * 16_000})))
    with pytest.raises(ValidationError, match="bytes encoded"):
        parse_event_json(orjson.dumps(event(metadata={"blob": "x" * 16_400})))
    deep: dict[str, object] = {}  # the metadata object itself is level 1
    for _ in range(7):
        deep = {"d": deep}
    parse_event_json(orjson.dumps(event(metadata=deep)))
    with pytest.raises(ValidationError, match="deeper"):
        parse_event_json(orjson.dumps(event(metadata={"d": deep})))


def test_metadata_depth_is_measured_whatever_its_text_holds() -> None:
    # Many containers side by side, and brackets inside strings, are not depth.
    wide = {f"k{i}": {"v": [i], "text": "[[[{{{"} for i in range(20)}
    parse_event_json(orjson.dumps(event(metadata=wide)))
    deep: list[object] = []
    for _ in range(8):
        deep = [deep]
    with pytest.raises(ValidationError, match="deeper than 8"):
        parse_event_json(orjson.dumps(event(metadata={"d": deep, "text": "no brackets"})))
    # Deeper than JSON encoders go still answers why.
    very_deep: dict[str, object] = {}
    for _ in range(1_000):
        very_deep = {"d": very_deep}
    with pytest.raises(ValidationError, match="deeper than 8"):
        ProgressEvent(session_id="s", workflow_type="map", step="a", progress=1, metadata=very_deep)


def test_batch_validation_names_the_index() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_event_list_json(orjson.dumps([event(), event(progress=500)]))
    assert caught.value.errors()[0]["loc"][:2] == (1, "progress")


def test_stream_entry_round_trip_keeps_every_field() -> None:
    original = ProgressEvent(
        session_id="s1",
        workflow_type="map",
        step="render",
        progress=12.5,
        metadata={"eta": 3, "nested": {"a": [1, 2]}},
        status="retrying",
        error="boom",
        attempt=2,
    ).stamped(1_700_000_000_123)
    fields = original.stream_fields()
    assert fields["attempt"] == "2"
    assert original.data()["attempt"] == 2
    assert fields["progress"] == "12.5"
    assert fields["ts"] == "1700000000123"
    assert event_from_entry("map", "1700000000123-0", fields) == original


def test_whole_progress_travels_as_an_integer() -> None:
    stamped = parse_event_json(orjson.dumps(event(progress=45.0))).stamped(1)
    assert stamped.stream_fields()["progress"] == "45"
    assert stamped.data()["progress"] == 45
    assert isinstance(stamped.data()["progress"], int)


def test_raw_xadd_entry_with_only_required_fields() -> None:
    parsed = event_from_entry(
        "map", "1700000000000-7", {"session_id": "s1", "step": "a", "progress": "45"}
    )
    assert parsed.ts == 1_700_000_000_000
    assert parsed.status == "running"
    assert parsed.metadata == {}
    assert parsed.attempt is None
    assert "attempt" not in parsed.stream_fields()
    assert "attempt" not in parsed.data()


def test_a_raw_retrying_entry_names_its_attempt() -> None:
    fields = {"session_id": "s1", "step": "a", "progress": "5", "status": "retrying"}
    parsed = event_from_entry("map", "1-0", {**fields, "attempt": "3", "error": "timeout"})
    assert (parsed.status, parsed.attempt, parsed.error, parsed.terminal) == (
        "retrying",
        3,
        "timeout",
        False,
    )


def test_raw_entry_ignores_foreign_fields_and_the_key_names_the_type() -> None:
    fields = {"session_id": "s1", "step": "a", "progress": "1", "workflow_type": "x", "extra": "y"}
    assert event_from_entry("map", "1-0", fields).workflow_type == "map"


@pytest.mark.parametrize(
    "fields",
    [
        {"step": "a", "progress": "1"},
        {"session_id": "s1", "step": "a", "progress": "lots"},
        {"session_id": "s1", "step": "a", "progress": "nan"},
        {"session_id": "s1", "step": "a", "progress": "1", "metadata": "{not json"},
        {"session_id": "s1", "step": "a", "progress": "1", "metadata": "[1]"},
        {"session_id": "s1", "step": "a", "progress": "1", "ts": "yesterday"},
        {"session_id": "s1", "step": "a", "progress": "1", "attempt": "second"},
        {"session_id": "s1", "step": "a", "progress": "1", "attempt": "0"},
    ],
)
def test_bad_raw_entries_raise_entry_error(fields: dict[str, str]) -> None:
    with pytest.raises(EntryError, match="entry 1-0"):
        event_from_entry("map", "1-0", fields)


def test_envelope_frame_is_the_wire_shape() -> None:
    parsed = parse_event_json(orjson.dumps(event(status="completed"))).stamped(5)
    envelope = Envelope.of("5-0", parsed)
    assert envelope.terminal
    assert envelope.key == StreamId(5, 0)
    assert orjson.loads(envelope.frame) == {
        "event": "workflow:progress:map",
        "id": "5-0",
        "data": {
            "session_id": "s1",
            "workflow_type": "map",
            "step": "analyzing",
            "progress": 45,
            "status": "completed",
            "metadata": {"details": "forests"},
            "ts": 5,
        },
    }


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "session_id",
                "workflow_type",
                "step",
                "progress",
                "metadata",
                "status",
                "error",
                "ts",
                "junk",
            ]
        ),
        json_values,
    )
)
def test_arbitrary_bodies_either_validate_or_raise_validation_error(
    body: dict[str, object],
) -> None:
    try:
        encoded = orjson.dumps(body)
    except orjson.JSONEncodeError:
        return
    try:
        parsed = parse_event_json(encoded)
    except (ValidationError, MalformedJson):
        return
    assert 0 <= parsed.progress <= 100
    assert math.isfinite(parsed.progress)


@given(st.dictionaries(st.text(max_size=12), st.text(max_size=40), max_size=8))
def test_arbitrary_stream_entries_either_decode_or_raise_entry_error(
    fields: dict[str, str],
) -> None:
    with contextlib.suppress(EntryError):
        event_from_entry("map", "1-0", fields)

"""The stream id type: parsing, formatting, ordering, and as a pydantic field."""

from __future__ import annotations

import re

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from relay.protocol.frames import parse_client_frame
from relay.protocol.stream_ids import START, STREAM_ID_PART_MAX, STREAM_ID_PATTERN, StreamId

parts = st.integers(min_value=0, max_value=STREAM_ID_PART_MAX)
ids = st.builds(StreamId, parts, parts)

MALFORMED = [
    "",
    "-",
    "5",  # Redis reads this as 5-0 in a range, but never hands it out
    "a-1",
    "1-",
    "-1",
    "1-2-3",
    "01-0",
    "1-00",
    "+1-0",
    "1_0-0",
    " 1-0",
    "1-0 ",
    "1-0\n",
    "\u0661-0",  # ARABIC-INDIC DIGIT ONE: int() reads it, a stream id has none
    "\u00b9-0",  # SUPERSCRIPT ONE: a digit to isdigit(), not to int()
    f"{STREAM_ID_PART_MAX + 1}-0",
    f"0-{STREAM_ID_PART_MAX + 1}",
]


class Query(BaseModel):
    since: StreamId | None = None


def test_parse_and_format() -> None:
    assert StreamId.parse("1700000000000-3") == StreamId(1_700_000_000_000, 3)
    assert StreamId.parse("1700000000000-3").ms == 1_700_000_000_000
    assert StreamId.parse("1700000000000-3").seq == 3
    assert str(StreamId(1_700_000_000_000, 3)) == "1700000000000-3"
    # f-strings format it the same way, as the exclusive range bound "(ms-seq" needs.
    assert f"({StreamId(5, 1)}" == "(5-1"


def test_the_bounds_round_trip() -> None:
    largest = f"{STREAM_ID_PART_MAX}-{STREAM_ID_PART_MAX}"
    assert StreamId.parse(largest) == StreamId(2**64 - 1, 2**64 - 1)
    assert str(StreamId.parse(largest)) == largest
    assert StreamId.parse("0-0") == START
    assert str(START) == "0-0"


@pytest.mark.parametrize("text", MALFORMED)
def test_malformed_text_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="not a stream id"):
        StreamId.parse(text)


@given(ids)
def test_format_then_parse_is_the_same_id(stream_id: StreamId) -> None:
    assert StreamId.parse(str(stream_id)) == stream_id


@given(ids)
def test_an_id_from_redis_reads_as_parse_reads_it(stream_id: StreamId) -> None:
    text = str(stream_id)
    assert StreamId.from_redis(text) == StreamId.parse(text) == stream_id
    assert isinstance(StreamId.from_redis(text), StreamId)


@pytest.mark.parametrize("text", ["", "5", "a-1", "1-", "-1", "1-2-3"])
def test_an_id_from_redis_that_is_not_two_numbers_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="not a stream id"):
        StreamId.from_redis(text)


@given(st.from_regex(STREAM_ID_PATTERN, fullmatch=True))
def test_parse_then_format_is_the_same_text(text: str) -> None:
    assert str(StreamId.parse(text)) == text


@given(st.text(alphabet="0123456789-\u0661\u00b9 \n", max_size=44))
def test_parse_accepts_exactly_what_the_pattern_describes(text: str) -> None:
    try:
        StreamId.parse(text)
    except ValueError:
        parsed = False
    else:
        parsed = True
    assert parsed is (re.fullmatch(STREAM_ID_PATTERN, text) is not None)


@given(ids, ids)
def test_ids_order_as_their_numbers_not_their_text(a: StreamId, b: StreamId) -> None:
    assert (a < b) is ((a.ms, a.seq) < (b.ms, b.seq))
    assert (a == b) is (str(a) == str(b))
    assert a >= START


def test_ordering_examples() -> None:
    assert StreamId.parse("9-0") < StreamId.parse("10-0")
    assert StreamId.parse("1-9") < StreamId.parse("1-10") < StreamId.parse("2-0")
    assert max(StreamId(3, 0), StreamId(2, 7)) == StreamId(3, 0)


def test_ids_are_hashable_values() -> None:
    assert {StreamId.parse("5-1"), StreamId(5, 1)} == {StreamId(5, 1)}
    assert {StreamId(5, 1): "x"}[StreamId.parse("5-1")] == "x"


def test_a_pydantic_field_takes_text_and_holds_the_id() -> None:
    query = Query.model_validate({"since": "5-1"})
    assert query.since == StreamId(5, 1)
    assert isinstance(query.since, StreamId)
    assert orjson.loads(query.model_dump_json()) == {"since": "5-1"}
    assert query.model_dump() == {"since": "5-1"}
    assert Query.model_validate({"since": None}).since is None


@pytest.mark.parametrize("value", [*MALFORMED, 5, [5, 1]])
def test_a_pydantic_field_refuses_what_is_no_stream_id_text(value: object) -> None:
    with pytest.raises(ValidationError) as caught:
        Query.model_validate({"since": value}, strict=True)
    [error] = caught.value.errors()
    assert error["loc"] == ("since",)
    expected = "not a stream id" if isinstance(value, str) else "valid string"
    assert expected in error["msg"]


def test_a_subscribe_frame_carries_its_since_parsed() -> None:
    frame = parse_client_frame('{"action": "subscribe", "workflow_type": "map", "since": "7-2"}')
    assert getattr(frame, "since", None) == StreamId(7, 2)


def test_the_json_schema_states_the_pattern() -> None:
    schema = Query.model_json_schema()["properties"]["since"]
    assert {"type": "string", "pattern": STREAM_ID_PATTERN} in schema["anyOf"]

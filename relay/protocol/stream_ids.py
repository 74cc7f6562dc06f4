"""Redis stream ids: one ordered value type, parsed from text and formatted back at the edges."""

from __future__ import annotations

from typing import Any, NamedTuple

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

# Both parts of a Redis stream id are unsigned 64-bit integers.
STREAM_ID_PART_MAX = 2**64 - 1


def decimal_at_most(limit: int) -> str:
    """A regular expression matching exactly the decimal numbers 0 to ``limit`` (``limit`` >= 10).

    Leading zeros are refused, so every number has one spelling; a bound in
    the pattern itself lets the OpenAPI document state exactly what is valid.
    """
    digits = str(limit)
    # [0-9] rather than \d, which also matches other scripts' digits.
    choices = ["0", f"[1-9][0-9]{{0,{len(digits) - 2}}}"]
    for position, digit in enumerate(digits):
        lowest, highest = (1 if position == 0 else 0), int(digit) - 1
        if highest >= lowest:
            below = str(lowest) if highest == lowest else f"[{lowest}-{highest}]"
            rest = len(digits) - position - 1
            tail = "" if rest == 0 else "[0-9]" if rest == 1 else f"[0-9]{{{rest}}}"
            choices.append(digits[:position] + below + tail)
    choices.append(digits)
    return f"(?:{'|'.join(choices)})"


_ID_PART = decimal_at_most(STREAM_ID_PART_MAX)


# The text :meth:`StreamId.parse` accepts, for documents that describe it (OpenAPI).
STREAM_ID_PATTERN = f"^{_ID_PART}-{_ID_PART}$"


_MALFORMED = (
    f"not a stream id: two whole numbers from 0 to {STREAM_ID_PART_MAX} "
    "joined by '-', like 1700000000000-0"
)


# tuple.__new__ itself: the generated NamedTuple constructor is a Python-level call.
_new_tuple = tuple.__new__


class StreamId(NamedTuple):
    """A Redis stream id, ``ms-seq``: ordered, hashable, and compared as a pair of numbers.

    Text becomes one where it enters (:meth:`from_redis` for ids read from
    Redis, :meth:`parse` for ids given by clients) and goes back with
    ``str()`` where it leaves (frames, Redis calls, JSON answers). As a
    pydantic field it takes the text, holds the parsed id, and dumps the text.
    """

    ms: int
    """Milliseconds since the epoch, as the stream's clock stamped the entry."""
    seq: int
    """The entry's number among those of the same millisecond."""

    def __str__(self) -> str:
        return f"{self[0]}-{self[1]}"

    @classmethod
    def parse(cls, text: str) -> StreamId:
        """``"1700000000000-3"`` as ``StreamId(1700000000000, 3)``; ValueError if malformed.

        Exactly the text of :data:`STREAM_ID_PATTERN` is accepted: both parts
        in the 64-bit range, ASCII digits, no leading zeros, so that every id
        has one spelling and ``str(StreamId.parse(text)) == text``.
        """
        ms, _, seq = text.partition("-")
        # isdigit() alone would let other scripts' digits through, and int() reads those too.
        if (
            ms.isdigit()
            and seq.isdigit()
            and text.isascii()
            and (ms[0] != "0" or len(ms) == 1)
            and (len(seq) == 1 or seq[0] != "0")
        ):
            ms_part, seq_part = int(ms), int(seq)
            # The maximum is all ones in binary: both parts are within it when their OR is.
            if ms_part | seq_part <= STREAM_ID_PART_MAX:
                return _new_tuple(cls, (ms_part, seq_part))
        raise ValueError(_MALFORMED)

    @classmethod
    def from_redis(cls, text: str) -> StreamId:
        """An id as Redis hands it out, in an entry or an answer; ValueError if not two numbers.

        Redis spells every id one way, so its text is only split and
        converted, without the checks of :meth:`parse` (which text from
        anywhere else needs): this runs for every event read.
        """
        ms, _, seq = text.partition("-")
        try:
            return _new_tuple(cls, (int(ms), int(seq)))
        except ValueError:
            raise ValueError(f"not a stream id: {text!r}") from None

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        # A parser rather than Field(pattern=...): one rule, and its message says what it is.
        # Dumped as text in Python mode too, so any model dump is ready for JSON.
        return core_schema.no_info_after_validator_function(
            cls.parse,
            core_schema.str_schema(),
            serialization=core_schema.to_string_ser_schema(when_used="always"),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "pattern": STREAM_ID_PATTERN}


# Below every entry: "from the very start", or "nothing read yet".
START = StreamId(0, 0)

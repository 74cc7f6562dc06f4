"""Redis stream ids: their validated text form, and a parsed form that orders them."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

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


STREAM_ID_PATTERN = f"^{_ID_PART}-{_ID_PART}$"


_STREAM_ID = re.compile(STREAM_ID_PATTERN)


def _stream_id(value: str) -> str:
    # fullmatch: re's "$" would also let a trailing newline through.
    if not _STREAM_ID.fullmatch(value):
        raise ValueError(
            f"not a stream id: two whole numbers from 0 to {STREAM_ID_PART_MAX} "
            "joined by '-', like 1700000000000-0"
        )
    return value


# A validator rather than Field(pattern=...): the pattern is long, the message says the rule.
StreamId = Annotated[str, AfterValidator(_stream_id)]


# A stream id parsed for ordering: (milliseconds, sequence).
StreamKey = tuple[int, int]


# Below every entry: "from the very start", or "nothing read yet".
NO_ID: StreamKey = (0, 0)


def parse_stream_id(entry_id: str) -> StreamKey:
    """``"1700000000000-3"`` as ``(1700000000000, 3)`` for ordering; ValueError if malformed."""
    ms, sep, seq = entry_id.partition("-")
    if not ms.isdigit() or (sep and not seq.isdigit()):
        raise ValueError(f"not a stream id: {entry_id!r}")
    return int(ms), int(seq) if sep else 0


def format_stream_id(key: StreamKey) -> str:
    """A parsed id as stream id text again: ``(1700000000000, 3)`` as ``"1700000000000-3"``."""
    return f"{key[0]}-{key[1]}"

"""The progress event: validation, the flat stream entry, and the JSON sent to subscribers."""

from __future__ import annotations

import re
import time
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from relay.keys import event_name

Status = Literal["running", "completed", "failed", "cancel_requested", "cancelled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})

SESSION_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
WORKFLOW_TYPE_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
MAX_METADATA_BYTES = 16 * 1024
MAX_METADATA_DEPTH = 8
MAX_ERROR_CHARS = 4096

SessionId = Annotated[str, Field(pattern=SESSION_ID_PATTERN)]
WorkflowType = Annotated[str, Field(pattern=WORKFLOW_TYPE_PATTERN)]

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

# A 422 answer or error frame lists this many problems at most, then how many were left out.
MAX_DETAIL_ITEMS = 20
MAX_DETAIL_FIELD_CHARS = 200


_CONTAINERS = (dict, list)


def _deeper_than(value: dict[str, Any] | list[Any], limit: int) -> bool:
    """Whether a JSON object nests more than ``limit`` levels (the object itself is 1).

    Descends into containers only, and stops at the first one past the limit;
    recursion is bounded by ``limit``.
    """
    if limit < 1:
        return True
    children = value.values() if isinstance(value, dict) else value
    for child in children:
        if isinstance(child, _CONTAINERS) and _deeper_than(child, limit - 1):
            return True
    return False


def format_number(value: float) -> int | float:
    """Whole numbers travel as integers, so ``45`` stays ``45`` rather than ``45.0``."""
    return int(value) if value.is_integer() else value


class ProgressEvent(BaseModel):
    """One progress report of one workflow session.

    The same checks apply wherever an event enters relay: an HTTP body, a
    reporter call, or a stream entry written by any worker.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    session_id: SessionId
    workflow_type: WorkflowType
    step: str = Field(min_length=1, max_length=128)
    progress: float = Field(ge=0, le=100, allow_inf_nan=False)
    metadata: dict[str, Any] = Field(default_factory=dict)
    status: Status = "running"
    error: str | None = Field(default=None, max_length=MAX_ERROR_CHARS)
    ts: int | None = Field(default=None, ge=0, le=2**53)

    @field_validator("ts", mode="before")
    @classmethod
    def _whole_number(cls, ts: Any) -> Any:
        # JSON does not tell 1700000000000.0 from 1700000000000 (nor does JSON Schema).
        if isinstance(ts, float) and ts.is_integer():
            return int(ts)
        return ts

    @field_validator("step")
    @classmethod
    def _printable(cls, step: str) -> str:
        if not step.isprintable():
            raise ValueError("step must contain printable characters only")
        return step

    @field_validator("metadata")
    @classmethod
    def _bounded_metadata(cls, metadata: dict[str, Any]) -> dict[str, Any]:
        if _deeper_than(metadata, MAX_METADATA_DEPTH):
            raise ValueError(f"metadata is nested deeper than {MAX_METADATA_DEPTH} levels")
        try:
            size = len(orjson.dumps(metadata))
        except (orjson.JSONEncodeError, TypeError) as exc:
            raise ValueError(f"metadata is not encodable as JSON: {exc}") from None
        if size > MAX_METADATA_BYTES:
            raise ValueError(f"metadata is {size} bytes encoded, more than {MAX_METADATA_BYTES}")
        return metadata

    @property
    def terminal(self) -> bool:
        """Whether this event ends its session."""
        return self.status in TERMINAL_STATUSES

    def stamped(self, now_ms: int | None = None) -> ProgressEvent:
        """This event with ``ts`` set, as whoever writes it to Redis must do."""
        if self.ts is not None:
            return self
        stamp = now_ms if now_ms is not None else time.time_ns() // 1_000_000
        return self.model_copy(update={"ts": stamp})

    def stream_fields(self, now_ms: int | None = None) -> dict[str, str]:
        """The flat stream entry; the workflow type is carried by the stream key.

        ``now_ms`` stamps an event that has no ``ts`` yet (see :meth:`stamped`).
        """
        fields = {
            "session_id": self.session_id,
            "step": self.step,
            "progress": str(format_number(self.progress)),
            "status": self.status,
        }
        if self.error is not None:
            fields["error"] = self.error
        if self.metadata:
            fields["metadata"] = orjson.dumps(self.metadata).decode()
        ts = self.ts if self.ts is not None else now_ms
        if ts is not None:
            fields["ts"] = str(ts)
        return fields

    def data(self) -> dict[str, Any]:
        """The ``data`` object subscribers receive."""
        data: dict[str, Any] = {
            "session_id": self.session_id,
            "workflow_type": self.workflow_type,
            "step": self.step,
            "progress": format_number(self.progress),
            "status": self.status,
            "metadata": self.metadata,
            "ts": self.ts,
        }
        if self.error is not None:
            data["error"] = self.error
        return data


EVENT_LIST = TypeAdapter(list[ProgressEvent])


class MalformedJson(ValueError):
    """A body or frame that is not standard JSON."""


def decode_json(text: bytes | str) -> Any:
    """Standard JSON only: NaN, Infinity, invalid UTF-8 and 65-bit integers are refused."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise MalformedJson(str(exc)) from None


def parse_event_json(body: bytes) -> ProgressEvent:
    """Validate one event from a JSON body; types are checked strictly."""
    return ProgressEvent.model_validate(decode_json(body), strict=True)


def parse_event_list_json(body: bytes) -> list[ProgressEvent]:
    """Validate a JSON array of events; types are checked strictly."""
    return EVENT_LIST.validate_python(decode_json(body), strict=True)


class EntryError(ValueError):
    """A stream entry that is not a valid event."""


_ENTRY_FIELDS = frozenset({"session_id", "step", "progress", "metadata", "status", "error", "ts"})


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


def _utf8(text: str) -> bool:
    """False for a string holding bytes that were not UTF-8 (kept as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def event_from_entry(workflow_type: str, entry_id: str, fields: dict[str, str]) -> ProgressEvent:
    """Read an event back from a stream entry written by any publisher.

    Raw ``XADD`` entries carry strings only, so numbers and metadata are parsed
    here; an entry with no ``ts`` takes the time from its stream id.
    """
    for name, value in fields.items():
        # isascii() is a flag check, so valid ASCII entries cost next to nothing.
        if not (name.isascii() and value.isascii()) and not (_utf8(name) and _utf8(value)):
            raise EntryError(f"entry {entry_id} of {workflow_type!r}: field {name!r} is not UTF-8")
    # Unknown fields are ignored and the key names the type: workers in other
    # languages may add fields of their own without losing their events.
    raw: dict[str, Any] = {k: v for k, v in fields.items() if k in _ENTRY_FIELDS}
    raw["workflow_type"] = workflow_type
    try:
        if "progress" in raw:
            raw["progress"] = float(raw["progress"])
        if "metadata" in raw:
            raw["metadata"] = orjson.loads(raw["metadata"])
        raw["ts"] = int(raw["ts"]) if "ts" in raw else parse_stream_id(entry_id)[0]
    except (ValueError, TypeError) as exc:
        raise EntryError(f"entry {entry_id} of {workflow_type!r}: {exc}") from None
    try:
        return ProgressEvent.model_validate(raw)
    except ValidationError as exc:
        fields_named = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors())
        raise EntryError(f"entry {entry_id} of {workflow_type!r}: bad {fields_named}") from None


def frame_prefix(workflow_type: str, entry_id: str) -> str:
    """What an event frame holds before its ``data`` object.

    Types and ids are validated to characters JSON never escapes, so the
    frame can be joined from parts: the ``data`` object is encoded once and
    serves both the WebSocket frame and the SSE ``data:`` line.
    """
    return f'{{"event":"{event_name(workflow_type)}","id":"{entry_id}","data":'


def encode_event_frame(entry_id: str, event: ProgressEvent) -> str:
    """The WebSocket text frame for one event, built once and sent to many."""
    data = orjson.dumps(event.data()).decode()
    return f"{frame_prefix(event.workflow_type, entry_id)}{data}}}"


def validation_detail(exc: ValidationError) -> list[dict[str, str]]:
    """One ``{"field", "message"}`` item per problem, for 422 answers and error frames.

    At most :data:`MAX_DETAIL_ITEMS` problems are listed, followed by an item
    of field ``...`` counting the rest, so a body full of mistakes cannot
    earn an answer many times its own size. Field names are shortened too.
    """
    problems = exc.errors(include_url=False, include_input=False, include_context=False)
    detail = [
        {"field": _field_name(problem["loc"]), "message": problem["msg"]}
        for problem in problems[:MAX_DETAIL_ITEMS]
    ]
    hidden = len(problems) - MAX_DETAIL_ITEMS
    if hidden > 0:
        detail.append({"field": "...", "message": f"{hidden} more problems not listed"})
    return detail


def _field_name(location: tuple[int | str, ...]) -> str:
    name = ".".join(str(part) for part in location) or "body"
    if len(name) > MAX_DETAIL_FIELD_CHARS:
        return name[:MAX_DETAIL_FIELD_CHARS] + "..."
    return name


class Envelope:
    """One event as the hub routes it: its routing keys and its encoded frame.

    The frame is encoded on first use, once, and then shared by every
    subscriber: an event nobody watches is never encoded.
    """

    __slots__ = (
        "_event",
        "_frame",
        "_key",
        "_sse",
        "id",
        "session_id",
        "terminal",
        "workflow_type",
    )

    def __init__(
        self,
        entry_id: str,
        workflow_type: str,
        session_id: str,
        terminal: bool,
        frame: str | None = None,
        event: ProgressEvent | None = None,
    ) -> None:
        if frame is None and event is None:
            raise ValueError("an envelope needs its frame or its event")
        self.id = entry_id
        self.workflow_type = workflow_type
        self.session_id = session_id
        self.terminal = terminal
        self._event = event
        self._frame = frame
        self._key: StreamKey | None = None
        self._sse: str | None = None

    @property
    def key(self) -> StreamKey:
        """The stream id as a sortable pair."""
        if self._key is None:
            self._key = parse_stream_id(self.id)
        return self._key

    @property
    def frame(self) -> str:
        """The WebSocket text frame, encoded on first use."""
        if self._frame is None:
            assert self._event is not None  # guaranteed by __init__
            self._frame = encode_event_frame(self.id, self._event)
        return self._frame

    @property
    def sse(self) -> str:
        """The Server-Sent Events message for this event, built on first use."""
        if self._sse is None:
            data = self.frame[len(frame_prefix(self.workflow_type, self.id)) : -1]
            name = event_name(self.workflow_type)
            self._sse = f"id: {self.id}\nevent: {name}\ndata: {data}\n\n"
        return self._sse

    @classmethod
    def of(cls, entry_id: str, event: ProgressEvent) -> Envelope:
        """Wrap a validated event; its frame is encoded when first needed."""
        return cls(entry_id, event.workflow_type, event.session_id, event.terminal, event=event)

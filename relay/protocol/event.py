"""The progress event and its rules: what a valid event is, and how JSON bodies become events."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal, get_args

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from relay.protocol.children import CHILD_FIELDS, MAX_CHILD_WEIGHT
from relay.protocol.numbers import format_number
from relay.protocol.plans import (
    MAX_PLAN_STEPS,
    POSITION_FIELDS,
    PlanStep,
    StepName,
    check_step_name,
    plan_json,
)

Status = Literal[
    "running", "retrying", "completed", "failed", "cancel_requested", "cancelled", "stalled"
]


TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
# The statuses of a session that has not ended, in the order Status lists them.
ONGOING_STATUSES: tuple[str, ...] = tuple(s for s in get_args(Status) if s not in TERMINAL_STATUSES)


CANCEL_REQUESTED = "cancel_requested"


# In the ``data`` of an event delivered while a cancel is pending; never part of a report.
CANCEL_FLAG = "cancel_requested"

# Sessions in these statuses are expected to keep reporting: the gateways'
# liveness check calls one that falls silent ``stalled`` (see relay.server.liveness).
REPORTING_STATUSES: frozenset[str] = frozenset({"running", "retrying", "cancel_requested"})


SESSION_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"


WORKFLOW_TYPE_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


MAX_METADATA_BYTES = 16 * 1024


MAX_METADATA_DEPTH = 8


MAX_ERROR_CHARS = 4096


# Attempts are counted in small numbers; the bound keeps them exact in JSON and JavaScript.
MAX_ATTEMPT = 1_000_000


SessionId = Annotated[str, Field(pattern=SESSION_ID_PATTERN)]


# The user a session runs for: an application's user id, shaped like a session id.
OWNER_PATTERN = SESSION_ID_PATTERN


Owner = Annotated[
    str,
    Field(
        pattern=OWNER_PATTERN,
        description="The user the session runs for; its first event naming one sets it for good.",
    ),
]


WorkflowType = Annotated[str, Field(pattern=WORKFLOW_TYPE_PATTERN)]


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


class ProgressEvent(BaseModel):
    """One progress report of one workflow session.

    The same checks apply wherever an event enters relay: an HTTP body, a
    reporter call, or a stream entry written by any worker.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    session_id: SessionId
    workflow_type: WorkflowType
    step: StepName
    progress: float = Field(ge=0, le=100, allow_inf_nan=False)
    metadata: dict[str, Any] = Field(default_factory=dict)
    status: Status = "running"
    error: str | None = Field(default=None, max_length=MAX_ERROR_CHARS)
    # Which try of the job this is, once it has been retried: a ``retrying``
    # event names the attempt it starts, and that attempt's reports repeat it.
    attempt: int | None = Field(default=None, ge=1, le=MAX_ATTEMPT)
    ts: int | None = Field(default=None, ge=0, le=2**53)
    # The user the session runs for (see relay.server.session_view: the first one named stays).
    owner: Owner | None = None
    # The session's steps, declared up front (see relay.protocol.plans); it
    # holds until an event brings another.
    plan: list[PlanStep] | None = Field(
        default=None,
        max_length=MAX_PLAN_STEPS,
        min_length=1,
        description="The session's weighted steps, in order; replaces any plan declared before. "
        "A step listed twice counts at its first listing.",
    )
    # The session this one is a child of, and its share of that parent (see
    # relay.protocol.children): the first event naming each sets it for good.
    parent_id: SessionId | None = Field(
        default=None,
        description="The parent session; the first event naming one sets it for good. "
        "A session naming itself has no parent.",
    )
    weight: float | None = Field(
        default=None,
        gt=0,
        le=MAX_CHILD_WEIGHT,
        allow_inf_nan=False,
        description="The session's share of its parent, 1 when never named; the first "
        "event naming one sets it for good.",
    )

    @field_validator("ts", "attempt", mode="before")
    @classmethod
    def _whole_number(cls, value: Any) -> Any:
        # JSON does not tell 1700000000000.0 from 1700000000000 (nor does JSON Schema).
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value

    @model_validator(mode="before")
    @classmethod
    def _not_its_own_parent(cls, value: Any) -> Any:
        # A session cannot be its own parent. JSON Schema cannot compare two
        # fields, and the document states every rule, so the name is dropped
        # rather than refused: the session has no parent.
        if isinstance(value, dict) and value.get("parent_id", "") == value.get("session_id"):
            return {k: v for k, v in value.items() if k != "parent_id"}
        return value

    @field_validator("step")
    @classmethod
    def _printable(cls, step: str) -> str:
        return check_step_name(step)

    @field_validator("metadata")
    @classmethod
    def _bounded_metadata(cls, metadata: dict[str, Any]) -> dict[str, Any]:
        too_deep = f"metadata is nested deeper than {MAX_METADATA_DEPTH} levels"
        try:
            encoded = orjson.dumps(metadata)
        except (orjson.JSONEncodeError, TypeError) as exc:
            if _deeper_than(metadata, MAX_METADATA_DEPTH):
                raise ValueError(too_deep) from None
            raise ValueError(f"metadata is not encodable as JSON: {exc}") from None
        # Nesting deeper than the limit takes more containers than the limit,
        # so the walk is only needed when the text opens that many (counted
        # in C; brackets inside strings only count too many, never too few).
        opened = encoded.count(b"{") + encoded.count(b"[")
        if opened > MAX_METADATA_DEPTH and _deeper_than(metadata, MAX_METADATA_DEPTH):
            raise ValueError(too_deep)
        size = len(encoded)
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
        if self.attempt is not None:
            fields["attempt"] = str(self.attempt)
        if self.owner is not None:
            fields["owner"] = self.owner
        if self.metadata:
            fields["metadata"] = orjson.dumps(self.metadata).decode()
        ts = self.ts if self.ts is not None else now_ms
        if ts is not None:
            fields["ts"] = str(ts)
        if self.plan is not None:
            fields["plan"] = orjson.dumps(plan_json(self.plan)).decode()
        if self.parent_id is not None:
            fields["parent_id"] = self.parent_id
        if self.weight is not None:
            fields["weight"] = str(format_number(self.weight))
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
        if self.attempt is not None:
            data["attempt"] = self.attempt
        if self.owner is not None:
            data["owner"] = self.owner
        if self.plan is not None:
            data["plan"] = plan_json(self.plan)
        if self.parent_id is not None:
            data["parent_id"] = self.parent_id
        if self.weight is not None:
            data["weight"] = format_number(self.weight)
        if self.status == CANCEL_REQUESTED:
            data[CANCEL_FLAG] = True
        return data


def as_delivered(event: ProgressEvent, cancel_pending: bool) -> ProgressEvent:
    """The event as subscribers and the session view take it: the one rule of a pending cancel.

    Once a session's stream holds a ``cancel_requested`` event, the worker's
    ordinary reports after it still say the session is cancelling (its
    ``data`` then carries ``cancel_requested: true``, see :meth:`ProgressEvent.data`),
    so nobody is offered Cancel again; a terminal event ends the cancel.
    ``cancel_pending`` tells whether the stream held such an event before this one.
    """
    if not cancel_pending or event.terminal or event.status == CANCEL_REQUESTED:
        return event
    return event.model_copy(update={"status": CANCEL_REQUESTED})


# What a gateway adds to an event's ``data`` as it delivers it, never part of a report.
DELIVERY_FIELDS = frozenset({CANCEL_FLAG, *POSITION_FIELDS, *CHILD_FIELDS})


def event_from_data(data: Any) -> ProgressEvent:
    """The event an event frame's ``data`` carries, the delivery's own fields left out."""
    if isinstance(data, dict) and not DELIVERY_FIELDS.isdisjoint(data):
        data = {name: value for name, value in data.items() if name not in DELIVERY_FIELDS}
    return ProgressEvent.model_validate(data)


EVENT_LIST = TypeAdapter(list[ProgressEvent])


class MalformedJson(ValueError):
    """A body or frame that is not standard JSON."""


def decode_json(text: bytes | str) -> Any:
    """Standard JSON only: NaN, Infinity, invalid UTF-8 and 65-bit integers are refused."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise MalformedJson(str(exc)) from None


def parse_event_json(body: bytes, ts: int | None = None) -> ProgressEvent:
    """Validate one event from a JSON body; types are checked strictly.

    ``ts`` stamps an event that has none (see :meth:`ProgressEvent.stamped`):
    done before validating, it spares copying the event afterwards.
    """
    return ProgressEvent.model_validate(_stamped(decode_json(body), ts), strict=True)


def parse_event_list_json(body: bytes, ts: int | None = None) -> list[ProgressEvent]:
    """Validate a JSON array of events; types are checked strictly; ``ts`` as for one."""
    value = decode_json(body)
    if ts is not None and isinstance(value, list):
        for item in value:
            _stamped(item, ts)
    return EVENT_LIST.validate_python(value, strict=True)


def _stamped(value: Any, ts: int | None) -> Any:
    """A decoded body given ``ts`` when it is an object that names none."""
    if ts is not None and isinstance(value, dict) and "ts" not in value:
        value["ts"] = ts
    return value


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

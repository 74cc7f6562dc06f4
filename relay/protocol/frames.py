"""Wire frames: what clients send, the control frames answered, events as text and as bytes.

An event is JSON text for WebSocket and SSE, and a whole WebSocket frame (header
included) that every connection is sent as the same bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from relay.protocol.event import WORKFLOW_TYPE_PATTERN, ProgressEvent, SessionId, decode_json
from relay.protocol.keys import event_name
from relay.protocol.plans import PlanPosition
from relay.protocol.stream_ids import StreamId

ANY_TYPE = "*"

# WebSocket close codes for a token the gateway will not take: missing or bad, and expired.
CLOSE_UNAUTHORIZED = 4001
CLOSE_TOKEN_EXPIRED = 4002

SubscriptionKey = tuple[str, str | None]

TypeOrAny = Annotated[str, Field(pattern=rf"^\*$|{WORKFLOW_TYPE_PATTERN}")]


class _Action(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SubscriptionTarget(_Action):
    """A workflow type (or ``*``), optionally narrowed to one session."""

    workflow_type: TypeOrAny
    session_id: SessionId | None = None

    @property
    def key(self) -> SubscriptionKey:
        """The hub's index key for this target."""
        return (self.workflow_type, self.session_id)


class Subscribe(SubscriptionTarget):
    """Start receiving events for a type or one session."""

    action: Literal["subscribe"]
    since: StreamId | None = None
    snapshot: bool = False

    @model_validator(mode="after")
    def _since_needs_one_type(self) -> Subscribe:
        if self.since is not None and self.workflow_type == ANY_TYPE:
            raise ValueError("since needs a single workflow_type, not '*'")
        return self


class Unsubscribe(SubscriptionTarget):
    """Stop receiving events for a subscription made earlier."""

    action: Literal["unsubscribe"]


class Cancel(_Action):
    """Ask the worker running a session to stop."""

    action: Literal["cancel"]
    session_id: SessionId


class Auth(_Action):
    """Present a subscriber token (when the query string did not carry one)."""

    action: Literal["auth"]
    token: Annotated[str, Field(min_length=1, max_length=8192)]


class Ping(_Action):
    """Keep-alive; answered with a pong."""

    action: Literal["ping"]


AnyClientFrame = Subscribe | Unsubscribe | Cancel | Auth | Ping
CLIENT_FRAME: TypeAdapter[AnyClientFrame] = TypeAdapter(
    Annotated[AnyClientFrame, Field(discriminator="action")]
)


def parse_client_frame(text: str | bytes) -> AnyClientFrame:
    """Validate one client frame; raises MalformedJson or pydantic's ValidationError."""
    return CLIENT_FRAME.validate_python(decode_json(text), strict=True)


def parse_query_subscription(query: dict[str, str]) -> Subscribe | None:
    """The subscription given in ``/ws?workflow_type=...``, if any."""
    if "workflow_type" not in query:
        return None
    fields: dict[str, Any] = {"action": "subscribe"}
    for name in ("workflow_type", "session_id", "since"):
        if name in query:
            fields[name] = query[name]
    if "snapshot" in query:
        fields["snapshot"] = query["snapshot"]
    return Subscribe.model_validate(fields)


def _frame(**fields: Any) -> str:
    return orjson.dumps(fields).decode()


def subscribed_frame(target: SubscriptionTarget, *, recovered: bool | None = None) -> str:
    """Confirms a subscription; ``recovered`` is present when ``since`` was given."""
    fields: dict[str, Any] = {
        "type": "subscribed",
        "workflow_type": target.workflow_type,
        "session_id": target.session_id,
    }
    if recovered is not None:
        fields["recovered"] = recovered
    return _frame(**fields)


def unsubscribed_frame(target: SubscriptionTarget) -> str:
    """Confirms an unsubscribe."""
    return _frame(
        type="unsubscribed", workflow_type=target.workflow_type, session_id=target.session_id
    )


def error_frame(code: str, message: str, detail: list[dict[str, str]] | None = None) -> str:
    """Tells the client what was wrong with its frame; the connection stays open."""
    fields: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if detail:
        fields["detail"] = detail
    return _frame(**fields)


def cancel_requested_frame(session_id: str, entry_id: str, children: int) -> str:
    """Confirms that a cancellation request was published, and for how many of its children."""
    return _frame(
        type="cancel_requested",
        session_id=session_id,
        id=entry_id,
        children_cancel_requested=children,
    )


def authenticated_frame(subject: str) -> str:
    """Confirms a token given in an ``auth`` frame."""
    return _frame(type="authenticated", sub=subject)


def reset_frame(workflow_type: str, epoch: str) -> str:
    """Tells subscribers of ``workflow_type`` that its history was lost or rewritten."""
    return _frame(
        type="reset",
        workflow_type=workflow_type,
        epoch=epoch,
        message="history was reset; refetch state",
    )


PONG_FRAME = _frame(type="pong")


def frame_prefix(workflow_type: str, entry_id: str) -> str:
    """What an event frame holds before its ``data`` object.

    Types and ids are validated to characters JSON never escapes, so the
    frame can be joined from parts: the ``data`` object is encoded once and
    serves both the WebSocket frame and the SSE ``data:`` line.
    """
    return f'{{"event":"{event_name(workflow_type)}","id":"{entry_id}","data":'


# The first byte of a final, unfragmented text frame (RFC 6455, section 5.2).
_TEXT_FIN = 0x81
_LENGTH_16 = struct.Struct("!BBH").pack
_LENGTH_64 = struct.Struct("!BBQ").pack


def websocket_text_frame(payload: bytes) -> bytes:
    """``payload`` as one whole WebSocket text frame, header included, as a server sends it.

    Frames from a server are not masked, so the bytes are the same for every
    connection (without permessage-deflate) and can be built once for all.
    """
    size = len(payload)
    if size < 126:
        header = bytes((_TEXT_FIN, size))
    elif size < 65536:
        header = _LENGTH_16(_TEXT_FIN, 126, size)
    else:
        header = _LENGTH_64(_TEXT_FIN, 127, size)
    return header + payload


def encode_event_frame(
    entry_id: str,
    event: ProgressEvent,
    position: PlanPosition | None = None,
    derived: dict[str, Any] | None = None,
) -> str:
    """The WebSocket text frame for one event, built once and sent to many.

    ``position`` is where the event stands in its session's plan, if the
    session has one: the gateway adds it to ``data`` (see :mod:`relay.protocol.plans`).
    ``derived`` are the figures about its parent or children the gateway
    adds (see :mod:`relay.protocol.children`).
    """
    data_fields = event.data()
    if position is not None:
        data_fields.update(position.fields())
    if derived:
        data_fields.update(derived)
    data = orjson.dumps(data_fields).decode()
    return f"{frame_prefix(event.workflow_type, entry_id)}{data}}}"


class Envelope:
    """One event as the hub routes it: its routing keys, its stream id and its encoded frame.

    The stream id is parsed once, as the envelope is made: every envelope is
    ordered against others (by the session view, by every coverage check),
    and the text from Redis stays beside it for the frames. The frame is
    encoded on first use, once, and then shared by every subscriber: an
    event nobody watches is never encoded.
    """

    __slots__ = (
        "_event",
        "_frame",
        "_sse",
        "_transport_part",
        "_wire",
        "derived",
        "id",
        "key",
        "owner",
        "parent_id",
        "parent_type",
        "position",
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
        position: PlanPosition | None = None,
    ) -> None:
        if frame is None and event is None:
            raise ValueError("an envelope needs its frame or its event")
        # The id as Redis gave it, for the frames; ``key`` is the same id parsed, for ordering.
        self.id = entry_id
        self.key = StreamId.from_redis(entry_id)
        self.workflow_type = workflow_type
        self.session_id = session_id
        self.terminal = terminal
        # The session's owner, by which the hub routes it to owner-scoped subscriptions.
        self.owner = event.owner if event is not None else None
        # The parent session, by which the hub routes it to the parent's subscriptions too.
        self.parent_id = event.parent_id if event is not None else None
        self.parent_type: str | None = None
        # Figures the gateway derived about its parent or children, set before it is routed.
        self.derived: dict[str, Any] | None = None
        self._event = event
        # Where the event stands in its session's plan, when it has one.
        self.position = position
        self._frame = frame
        self._sse: str | None = None
        self._wire: bytes | None = None
        self._transport_part: bytes | None = None

    @property
    def frame(self) -> str:
        """The WebSocket text frame, encoded on first use."""
        if self._frame is None:
            assert self._event is not None  # guaranteed by __init__
            self._frame = encode_event_frame(self.id, self._event, self.position, self.derived)
        return self._frame

    @property
    def websocket_frame(self) -> bytes:
        """The frame as a whole WebSocket text frame (see :func:`websocket_text_frame`)."""
        if self._wire is None:
            self._wire = websocket_text_frame(self.frame.encode())
        return self._wire

    def transport_part(self, build: Callable[[Envelope], bytes]) -> bytes:
        """What ``build`` makes of this event, made on first use and then shared.

        For a transport whose frames differ per subscriber only in a few bytes
        (Socket.IO adds the connection's offset): the rest is built once. One
        transport uses it, so it keeps one result, whichever ``build`` asked first.
        """
        if self._transport_part is None:
            self._transport_part = build(self)
        return self._transport_part

    @property
    def data_json(self) -> str:
        """The event's ``data`` object as JSON, cut from the frame."""
        return self.frame[len(frame_prefix(self.workflow_type, self.id)) : -1]

    @property
    def sse(self) -> str:
        """The Server-Sent Events message for this event, built on first use."""
        if self._sse is None:
            name = event_name(self.workflow_type)
            self._sse = f"id: {self.id}\nevent: {name}\ndata: {self.data_json}\n\n"
        return self._sse

    def renewed(self) -> Envelope:
        """The same event in an envelope of its own, whose frame is encoded afresh."""
        if self._event is None:
            return self
        fresh = Envelope.of(self.id, self._event, self.position)
        fresh.parent_type = self.parent_type
        return fresh

    @classmethod
    def of(
        cls, entry_id: str, event: ProgressEvent, position: PlanPosition | None = None
    ) -> Envelope:
        """Wrap a validated event; its frame is encoded when first needed."""
        return cls(
            entry_id,
            event.workflow_type,
            event.session_id,
            event.terminal,
            event=event,
            position=position,
        )

"""WebSocket frames: what clients may send, and the control frames the gateway answers with."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from relay.hub import ANY_TYPE
from relay.models import WORKFLOW_TYPE_PATTERN, SessionId, StreamId, decode_json
from relay.subscriber import SubscriptionKey

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


def cancel_requested_frame(session_id: str, entry_id: str) -> str:
    """Confirms that a cancellation request was published."""
    return _frame(type="cancel_requested", session_id=session_id, id=entry_id)


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

"""What the HTTP API answers, as models.

The endpoints build their JSON answers from these models, and the OpenAPI
document (:mod:`relay.server.openapi`) is generated from the same models, so
what is served and what is documented have one source. Two exceptions on
the serving side are built without their models, and the tests check them
against the models: a session's state, built by
:meth:`relay.server.session_view.SessionState.as_dict` for every session of
a listing (:class:`SessionStateAnswer`), and the publish answers, given on
every publish (:func:`publish_answer`, :func:`batch_answer`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from relay.protocol.children import MAX_CHILD_WEIGHT, MAX_CHILDREN_LISTED
from relay.protocol.event import (
    WORKFLOW_TYPE_PATTERN,
    Owner,
    ProgressEvent,
    SessionId,
    Status,
    WorkflowType,
)
from relay.protocol.keys import EVENT_PREFIX
from relay.protocol.plans import PlanStep
from relay.protocol.stream_ids import StreamId

EVENT_NAME_PATTERN = "^" + re.escape(EVENT_PREFIX) + WORKFLOW_TYPE_PATTERN.removeprefix("^")


EventName = Annotated[
    str,
    Field(pattern=EVENT_NAME_PATTERN, description="The event name of the workflow type."),
]


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ErrorItem(_Answer):
    """One problem of a refused request: the field it concerns and what is wrong with it."""

    field: str
    message: str


class ErrorAnswer(_Answer):
    """Every refusal and failure: a stable code, a message for people, the problems found."""

    error: str = Field(description="A stable code, such as validation_failed or session_ended.")
    message: str
    detail: list[ErrorItem] = Field(description="Empty unless fields of the input broke rules.")


class PublishAnswer(_Answer):
    """One event published."""

    id: StreamId = Field(description="The event's stream entry id.")
    event: EventName
    cancel_requested: bool = Field(
        description="True while a cancel of the event's session is pending: its worker should stop."
    )


class BatchAnswer(_Answer):
    """A batch of events published, all of them."""

    ids: list[StreamId] = Field(description="The events' stream entry ids, in batch order.")
    cancel_requested: list[SessionId] = Field(
        description="The batch's sessions with a pending cancel, sorted; their workers should stop."
    )


def publish_answer(entry_id: str, event: str, cancel_requested: bool) -> dict[str, Any]:
    """What :class:`PublishAnswer` dumps to, built without validating it again.

    Publishing answers on every request, and each value is already known
    good (a stream id Redis gave, the event name of a validated type), so
    the model serves the document and the tests, which check this against it.
    """
    return {"id": entry_id, "event": event, "cancel_requested": cancel_requested}


def batch_answer(ids: list[str], cancel_requested: list[str]) -> dict[str, Any]:
    """What :class:`BatchAnswer` dumps to, unvalidated, as :func:`publish_answer` is."""
    return {"ids": ids, "cancel_requested": cancel_requested}


class CancelAnswer(_Answer):
    """A cancel requested: the ``cancel_requested`` event published, or the one pending."""

    id: StreamId = Field(description="The stream entry id of the cancel_requested event.")
    event: EventName
    session_id: SessionId
    status: Literal["cancel_requested"]
    children_cancel_requested: int = Field(
        ge=0,
        description="How many of the session's children had not ended: each now has a "
        "cancel_requested event of its own (one at most).",
    )


class SessionStateAnswer(_Answer):
    """The latest state of one session, derived from its events."""

    session_id: SessionId
    workflow_type: WorkflowType
    step: str
    progress: float = Field(
        ge=0,
        le=100,
        description="The latest report's progress, as reported: with a plan, the step's.",
    )
    status: Status = Field(
        description="cancel_requested from the cancel_requested event until the session ends, "
        "whatever the worker reports meanwhile."
    )
    cancel_requested: bool = Field(
        description="Whether a cancel is pending: requested, and the session has not ended."
    )
    error: str | None
    attempt: int = Field(
        ge=1, description="The attempt the worker is on: 1 until it reported a retry."
    )
    last_error: str | None = Field(
        description="The error of the latest event that had one, such as a failed attempt's."
    )
    metadata: dict[str, Any]
    first_progress: float = Field(
        ge=0, le=100, description="The first event's progress, as reported."
    )
    plan: list[PlanStep] | None = Field(
        description="The steps the session declared last, in order; null without a plan."
    )
    step_index: int | None = Field(
        ge=1,
        description="The latest report's step in the plan, 1-based; null without a plan or "
        "for a step the plan does not list.",
    )
    step_count: int | None = Field(ge=1, description="The plan's steps; null without a plan.")
    step_progress: float = Field(
        ge=0, le=100, description="The current step's progress: the latest report's, as progress."
    )
    overall_progress: float = Field(
        ge=0,
        le=100,
        description="The whole workflow's progress: computed from the plan's weights, equal to "
        "progress without a plan; a step the plan does not list leaves it where it was.",
    )
    first_overall_progress: float = Field(
        ge=0, le=100, description="The overall progress at the first event: the estimate's start."
    )
    started_at: int = Field(description="The first event's ts.")
    updated_at: int = Field(description="The latest event's ts.")
    typical_duration: float | None = Field(
        gt=0,
        description="Seconds sessions of its type typically take: the median of the latest "
        "completed ones seen; null while none was.",
    )
    typical_step_durations: list[Annotated[float, Field(gt=0)] | None] | None = Field(
        description="Seconds each step of the plan typically takes, in the plan's order: the "
        "median of the latest completed sessions' times from a step's first event to the next "
        "step's (or the end); null for a step none was seen to run, and without a plan.",
    )
    estimated_time_remaining: float | None = Field(
        ge=0,
        description="Seconds: the reporter's own figure when its metadata gives one, else "
        "estimated from the overall progress rate and the typical durations of the plan's "
        "steps still to run when all are known, else of its type; null when unknown.",
    )
    last_event_id: StreamId
    owner: Owner | None = Field(description="The user the session runs for, if an event named one.")
    parent_id: SessionId | None = Field(
        description="The session's parent, set by the first event naming one."
    )
    weight: float | None = Field(
        gt=0,
        le=MAX_CHILD_WEIGHT,
        description="The session's share of its parent, set by the first event naming one; "
        "null counts as 1.",
    )
    children: list[SessionId] = Field(
        max_length=MAX_CHILDREN_LISTED,
        description="The ids of its latest updated children, the latest first.",
    )
    children_count: int = Field(ge=0, description="Children remembered, listed or not.")
    children_ongoing: int = Field(ge=0, description="Children that have not ended.")
    children_completed: int = Field(ge=0, description="Children that completed.")
    children_failed: int = Field(ge=0, description="Children that failed.")
    children_cancelled: int = Field(ge=0, description="Children that were cancelled.")
    children_progress: float | None = Field(
        ge=0,
        le=100,
        description="The children's weighted mean progress (a completed child counts 100, "
        "any other where it stands or stopped); null without children. It is the session's "
        "overall_progress when the session declared no progress of its own: none of its "
        "reports above 0, and no plan.",
    )


class EventData(ProgressEvent):
    """A report as delivered: while a cancel is pending, an ordinary report says so.

    With a plan, it also says where it stands in it; a gateway derives these
    fields from the session's plan and the report, so all gateways agree.
    """

    cancel_requested: Literal[True] | None = Field(
        default=None,
        description="Present (true) when status is cancel_requested: the stream held a "
        "cancel_requested event before this one, or this is it, and it is not terminal.",
    )
    overall_progress: float | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Present in the events of a session with a plan: the workflow's progress "
        "the gateway computed from the plan; null for a step the plan does not list.",
    )
    step_index: int | None = Field(
        default=None,
        ge=1,
        description="Present with a plan: the step's place in it, 1-based; null for a step "
        "the plan does not list.",
    )
    step_count: int | None = Field(
        default=None, ge=1, description="Present with a plan: how many steps it lists."
    )
    parent_progress: float | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Present in a child's events routed live: its parent's overall progress "
        "as the gateway knew it after this event. Replays and history carry none.",
    )
    parent_children_count: int | None = Field(
        default=None, ge=0, description="Present with parent_progress: the parent's children."
    )
    parent_children_completed: int | None = Field(
        default=None,
        ge=0,
        description="Present with parent_progress: the parent's children that completed.",
    )
    children_count: int | None = Field(
        default=None,
        ge=0,
        description="Present in a parent's events routed live and in its snapshot: its "
        "children; overall_progress is then their aggregate when it declared no progress.",
    )
    children_completed: int | None = Field(
        default=None, ge=0, description="Present with children_count: those that completed."
    )


class EventFrame(_Answer):
    """One event as subscribers receive it, over WebSocket and in a session's history."""

    event: EventName
    id: StreamId
    data: EventData


class HealthAnswer(_Answer):
    """The process is up."""

    status: Literal["ok"]


class ReadyAnswer(_Answer):
    """The store accepts writes and the stream reader follows the streams."""

    status: Literal["ready"]
    embedded: bool = Field(description="True when running on the in-process store, not Redis.")


class NotReadyAnswer(_Answer):
    """What keeps the gateway from being ready."""

    status: Literal["not ready"]
    problems: list[str]

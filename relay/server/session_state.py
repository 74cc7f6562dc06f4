"""One session's state: what its events, as delivered, say of it.

The session view (:mod:`relay.server.session_view`) keeps one per recent
session and folds each of its events into it; its ``as_dict`` is the state
the HTTP API answers.
"""

from __future__ import annotations

from typing import Any

from relay.protocol.children import (
    DEFAULT_CHILD_WEIGHT,
)
from relay.protocol.event import CANCEL_REQUESTED, ProgressEvent
from relay.protocol.frames import Envelope
from relay.protocol.numbers import format_number
from relay.protocol.plans import PlanStep, plan_json
from relay.protocol.progress import estimated_time_remaining
from relay.protocol.stream_ids import StreamId
from relay.server.children import ChildrenTally
from relay.server.declared_plans import DeclaredPlans, plan_position
from relay.server.durations import Durations
from relay.server.recent_ids import DEFAULT_HISTORY_LIMIT, RecentIds
from relay.server.step_times import StepTimes


class SessionState:
    """What is known of one session: its latest event, when it started, how fast it moves."""

    __slots__ = (
        "attempt",
        "cancel",
        "children",
        "declared",
        "durations",
        "error",
        "first_overall",
        "first_progress",
        "heard",
        "history",
        "last",
        "last_error",
        "latest",
        "metadata",
        "own_overall",
        "owner",
        "parent_id",
        "plans",
        "position",
        "progress",
        "session_id",
        "started_at",
        "status",
        "step",
        "step_times",
        "updated_at",
        "weight",
        "workflow_type",
    )

    def __init__(
        self,
        envelope: Envelope,
        event: ProgressEvent,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
        durations: Durations | None = None,
        children: ChildrenTally | None = None,
    ) -> None:
        # Where the typical duration of its type is learned; a fresh store knows none.
        self.durations = durations if durations is not None else Durations()
        self.session_id = event.session_id
        self.started_at = event.ts or 0
        self.first_progress = event.progress
        self.workflow_type = event.workflow_type
        # The ids of its latest events, all in the stream of its workflow type.
        self.history = RecentIds(history_limit)
        self.attempt = 1
        self.last_error: str | None = None
        # The session's cancel_requested event, once its stream holds one.
        self.cancel: Envelope | None = None
        # The user the session runs for: the first owner an event names stays.
        self.owner = event.owner
        self.plans = DeclaredPlans()
        self.step_times = StepTimes()
        self.own_overall = 0.0
        # The parent and the share of it: set by the first events naming them.
        self.parent_id = event.parent_id
        self.weight = event.weight
        # Its children, once any is known; whether it ever declared progress of its own.
        self.children = children
        self.declared = False
        self.apply(envelope, event)
        self.first_overall = self.overall

    def apply(self, envelope: Envelope, event: ProgressEvent) -> None:
        """Take ``event`` as the session's latest."""
        if event.workflow_type != self.workflow_type:
            # A session id reused in another type: history follows the latest type's stream.
            self.history.clear()
            self.workflow_type = event.workflow_type
            self.cancel = None
            self.plans.clear()
            self.step_times.clear()
        if event.status == CANCEL_REQUESTED and self.cancel is None:
            self.cancel = envelope
        self.record(envelope)
        self.step = event.step
        self.progress = event.progress
        self.status = event.status
        self.error = event.error
        # Reports that do not say keep the attempt and error a retry announced.
        if event.attempt is not None:
            self.attempt = event.attempt
        if event.error is not None:
            self.last_error = event.error
        self.metadata = event.metadata
        if self.owner is None:
            self.owner = event.owner
        if self.parent_id is None:
            self.parent_id = event.parent_id
        if self.weight is None:
            self.weight = event.weight
        self.declared = self.declared or event.progress > 0 or event.plan is not None
        self.updated_at = event.ts or self.started_at
        self.latest = envelope
        self.heard = envelope
        self.plans.take(envelope.key, event)
        self.position = plan_position(self.plan, event)
        if self.position is None:
            self.own_overall = event.progress
        elif self.position.overall is not None:
            # A step the plan does not list leaves the overall figure where it was.
            self.own_overall = self.position.overall
        listed = self.position is not None and self.position.step_index is not None
        if listed and not event.terminal:
            self.step_times.take(event.step, self.updated_at)

    @property
    def aggregated(self) -> bool:
        """Whether its overall figure is its children's: it has some, and declared no progress."""
        return not self.declared and self.children is not None and len(self.children) > 0

    @property
    def overall(self) -> float:
        """The whole workflow's progress: its plan's figure, its own, or its children's."""
        if self.aggregated:
            assert self.children is not None  # aggregated says so
            return self.children.progress
        return self.own_overall

    @property
    def children_done(self) -> bool:
        """Whether nothing of its children keeps it from completing: each completed."""
        children = self.children
        return not self.aggregated or (children is not None and children.completed == len(children))

    @property
    def share(self) -> float:
        """Its weight in its parent's aggregate."""
        return self.weight if self.weight is not None else DEFAULT_CHILD_WEIGHT

    @property
    def plan(self) -> tuple[PlanStep, ...] | None:
        """The plan the session declared last, if any."""
        return self.plans.latest

    def record(self, envelope: Envelope) -> None:
        """Add the event to the session's history, without changing its state."""
        if envelope.workflow_type == self.workflow_type:
            self.history.add(envelope.key)

    def repeated_by(self, event: ProgressEvent) -> bool:
        """Whether ``event`` changes nothing visible of the session: a heartbeat."""
        return (
            event.workflow_type == self.workflow_type
            and event.status == self.status
            and event.step == self.step
            and event.progress == self.progress
            and event.error == self.error
            and event.metadata == self.metadata
            and (event.owner is None or self.owner is not None)
            and (event.plan is None or tuple(event.plan) == self.plan)
            and (event.parent_id is None or self.parent_id is not None)
            and (event.weight is None or self.weight is not None)
        )

    @property
    def terminal(self) -> bool:
        """Whether the session has ended."""
        return self.latest.terminal

    @property
    def cancel_requested(self) -> bool:
        """Whether a cancel is pending: requested, and the session has not ended yet."""
        return self.status == CANCEL_REQUESTED

    def cancel_pending_at(self, key: StreamId) -> bool:
        """Whether the session's event at ``key`` comes while a cancel is pending.

        After the cancel_requested event and, once the session ended, before
        the event that ended it: a replay of an older entry says what it said.
        """
        cancel = self.cancel
        if cancel is None or key < cancel.key:
            return False
        return not self.terminal or key < self.latest.key

    def typical_duration(self) -> float | None:
        """Seconds sessions of its type typically take; None while none was seen to complete."""
        return self.durations.typical(self.workflow_type)

    def typical_step_durations(self) -> list[float | None] | None:
        """Seconds each step of its plan typically takes (None where unknown); None without one."""
        if self.plan is None:
            return None
        return self.durations.typical_steps(self.workflow_type, (s.step for s in self.plan))

    def estimated_time_remaining(self) -> float | None:
        """Seconds left, by the rule of :func:`relay.protocol.progress.estimated_time_remaining`.

        The rule is given the overall figures, so with a plan the rate is
        that of the whole workflow, not of its current step, and what its
        steps typically take; with its children's aggregate, the latest child
        report is its latest update.
        """
        updated_at = self.updated_at
        if self.aggregated and self.children is not None:
            updated_at = max(updated_at, self.children.updated_at)
        return estimated_time_remaining(
            status=self.status,
            progress=self.overall,
            metadata=self.metadata,
            first_progress=self.first_overall,
            started_at=self.started_at,
            updated_at=updated_at,
            typical_duration=self.typical_duration(),
            typical_step_durations=self.typical_step_durations(),
            step_index=None if self.position is None else self.position.step_index,
            step_progress=self.progress,
        )

    def as_dict(self) -> dict[str, Any]:
        """The state as the HTTP API returns it."""
        return {
            "session_id": self.session_id,
            "workflow_type": self.workflow_type,
            "step": self.step,
            "progress": format_number(self.progress),
            "status": self.status,
            "cancel_requested": self.cancel_requested,
            "error": self.error,
            "attempt": self.attempt,
            "last_error": self.last_error,
            "metadata": self.metadata,
            "first_progress": format_number(self.first_progress),
            "plan": None if self.plan is None else plan_json(self.plan),
            "step_index": None if self.position is None else self.position.step_index,
            "step_count": None if self.position is None else self.position.step_count,
            "step_progress": format_number(self.progress),
            "overall_progress": format_number(self.overall),
            "first_overall_progress": format_number(self.first_overall),
            "started_at": self.started_at,
            "updated_at": self.updated_at,
            "typical_duration": self.typical_duration(),
            "typical_step_durations": self.typical_step_durations(),
            "estimated_time_remaining": self.estimated_time_remaining(),
            "last_event_id": self.latest.id,
            "owner": self.owner,
            "parent_id": self.parent_id,
            "weight": None if self.weight is None else format_number(self.weight),
            **children_fields(self.children),
        }


def children_fields(children: ChildrenTally | None) -> dict[str, Any]:
    """A state's fields about its children: the latest ids, and counts by status."""
    if children is None:
        children = ChildrenTally()
    return {
        "children": children.ids(),
        "children_count": len(children),
        "children_ongoing": children.ongoing,
        "children_completed": children.completed,
        "children_failed": children.by_status.get("failed", 0),
        "children_cancelled": children.by_status.get("cancelled", 0),
        "children_progress": None if not len(children) else format_number(children.progress),
    }

"""The session view: the latest state of every recent session, derived from the streams.

Every gateway sees every event, so each keeps this view in memory and answers
session queries without a Redis round trip. It is rebuilt from the retained
stream tail when a gateway starts, and since a session's state depends only
on its events, every gateway answers the same for the same session. Memory
stays bounded: a session is forgotten ``ttl_ms`` after its last event, and
only the ``max_sessions`` most recently updated are kept, each with the ids
of at most its ``history_limit`` latest events (what its history lists).
The view also teaches a :class:`~relay.server.durations.Durations` store how
long the sessions it sees complete took, and their plans' steps, and every
state's time remaining uses the typical durations of its type and steps.

Children (see :mod:`relay.protocol.children`) are tallied per parent id in
:class:`~relay.server.children.ChildrenTally`: a parent that declares no
progress of its own shows its children's aggregate, and the events routed
live carry the figures derived after them (see :meth:`SessionView.apply`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from relay.protocol.children import (
    CHILDREN_COMPLETED_FIELD,
    CHILDREN_COUNT_FIELD,
    PARENT_CHILDREN_FIELD,
    PARENT_COMPLETED_FIELD,
    PARENT_PROGRESS_FIELD,
)
from relay.protocol.entries import now_ms
from relay.protocol.event import ProgressEvent, as_delivered
from relay.protocol.frames import Envelope
from relay.protocol.numbers import format_number
from relay.protocol.plans import OVERALL_FIELD
from relay.protocol.stream_ids import StreamId
from relay.server.children import ChildrenTally
from relay.server.declared_plans import plan_position
from relay.server.durations import Durations
from relay.server.own_entries import OwnEntries
from relay.server.recent_ids import DEFAULT_HISTORY_LIMIT
from relay.server.session_state import SessionState

# Heartbeats applied ahead and not read back yet, remembered at most: the
# reader reads them back within milliseconds, unless they were trimmed first.
MAX_UNROUTED = 10_000


class SessionView:
    """Latest state per session, bounded by age and count."""

    def __init__(
        self,
        *,
        ttl_ms: int,
        max_sessions: int,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._ttl_ms = ttl_ms
        self._max = max_sessions
        self._history_limit = history_limit
        self._clock = clock
        self.durations = Durations()
        # Ordered by last update, oldest first, so eviction pops from the front.
        self._sessions: OrderedDict[str, SessionState] = OrderedDict()
        # Heartbeats applied before the reader reads them back (see apply).
        self._unrouted: OrderedDict[StreamId, None] = OrderedDict()
        # The entries this gateway wrote, so its reader need not decode them again.
        self.own = OwnEntries()
        # Per parent id, its children's tally, kept whether the parent is known or not.
        self._children: dict[str, ChildrenTally] = {}
        self.evicted = 0

    def _horizon(self) -> int:
        return self._clock() - self._ttl_ms

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, session_id: str) -> SessionState | None:
        """The state of one session, if it is still remembered."""
        state = self._sessions.get(session_id)
        if state is not None and state.updated_at < self._horizon():
            return None
        return state

    def delivered(self, entry_id: str, event: ProgressEvent) -> tuple[Envelope, ProgressEvent]:
        """The session's entry as delivered, by :func:`~relay.protocol.event.as_delivered`.

        With a plan, the envelope also carries where the entry stands in it
        (:func:`~relay.protocol.plans.position`), which its frame's ``data`` shows.
        Whether a cancel is pending at the entry, and which plan holds for it,
        depend only on the entries before it in the stream, so every gateway
        delivers the same, live or in a replay. Live, call it before applying
        the entry, after the ones before it.
        """
        state = self._sessions.get(event.session_id)
        if state is not None and state.owner is not None and event.owner != state.owner:
            # Ownership belongs to the session: an event omitting its owner, or
            # naming another, is delivered as its session's, to its session's owner.
            event = event.model_copy(update={"owner": state.owner})
        if state is not None and _strays(state, event):
            # Like its owner, a session's parent and weight are its own, whatever an event says.
            event = event.model_copy(update={"parent_id": state.parent_id, "weight": state.weight})
        envelope = Envelope.of(entry_id, event)
        if event.parent_id is not None:
            parent = self._sessions.get(event.parent_id)
            envelope.parent_type = None if parent is None else parent.workflow_type
        if state is None or state.workflow_type != event.workflow_type:
            state = None
        elif state.cancel_pending_at(envelope.key):
            shown = as_delivered(event, cancel_pending=True)
            if shown is not event:
                envelope, event = Envelope.of(entry_id, shown), shown
        plan = tuple(event.plan) if event.plan is not None else None
        if plan is None and state is not None:
            plan = state.plans.at(envelope.key)
        envelope.position = plan_position(plan, event)
        return envelope, event

    def apply(self, envelope: Envelope, event: ProgressEvent, *, ahead: bool = False) -> bool:
        """Fold one event (as delivered, see :meth:`delivered`) into the view.

        Answers whether subscribers are to receive it.

        An event to route is given the figures derived after it (see
        :meth:`_derive`); replays, which are never applied, carry none.

        A heartbeat (an event that changes nothing visible, see
        :meth:`SessionState.repeated_by`) only says the worker is alive: it
        moves the session's ``heard`` entry on, and is neither routed nor
        kept in the history. ``ahead`` is for the gateway that applies what it
        published before its reader reads it back: a heartbeat applied ahead
        is remembered, so the read-back is not routed either.
        """
        sessions = self._sessions
        state = sessions.get(event.session_id)
        if state is None:
            state = sessions[event.session_id] = SessionState(
                envelope,
                event,
                self._history_limit,
                self.durations,
                self._children.get(event.session_id),
            )
        elif envelope.key <= state.heard.key:
            # Already applied: the gateway that published an event applies it
            # at once, and its reader reads the same entry back later.
            if envelope.key in self._unrouted:
                del self._unrouted[envelope.key]
                return False
            self._derive(envelope)
            return True
        elif state.terminal and not event.terminal:
            # An ended session stays ended; a stray late report does not revive it,
            # though it is still one of its events.
            state.record(envelope)
            self._derive(envelope)
            return True
        elif state.repeated_by(event):
            state.heard = envelope
            self._tally(state)
            if ahead:
                self._unrouted[envelope.key] = None
                while len(self._unrouted) > MAX_UNROUTED:
                    self._unrouted.popitem(last=False)
            return False
        else:
            self._learn(state, event)
            state.apply(envelope, event)
            sessions.move_to_end(event.session_id)
        self._tally(state)
        self.evict()
        self._derive(envelope)
        return True

    def _tally(self, state: SessionState) -> None:
        """Count a child's latest figures in its parent's tally."""
        parent_id = state.parent_id
        if parent_id is None:
            return
        tally = self._children.get(parent_id)
        if tally is None:
            tally = self._children[parent_id] = ChildrenTally()
            parent = self._sessions.get(parent_id)
            if parent is not None:
                parent.children = tally
        tally.count(state.session_id, state.share, state.status, state.overall)
        tally.heard(state.heard.key.ms, state.updated_at)

    def _untally(self, state: SessionState) -> None:
        """Take a forgotten session out of its parent's tally, and the tally once empty."""
        parent_id = state.parent_id
        tally = None if parent_id is None else self._children.get(parent_id)
        if parent_id is None or tally is None:
            return
        tally.drop(state.session_id)
        if not len(tally):
            del self._children[parent_id]
            parent = self._sessions.get(parent_id)
            if parent is not None:
                parent.children = None

    def children(self, parent_id: str) -> ChildrenTally | None:
        """The tally of a parent's children, if any is remembered."""
        return self._children.get(parent_id)

    def _derive(self, envelope: Envelope) -> None:
        """Give a routed event the figures of this view after it.

        A parent's own event carries its children's counts and, when it shows
        their aggregate, that as ``overall_progress``; a child's event carries
        its parent's overall figure and counts. They are this gateway's figures
        as it routes the event: every gateway reaches the same once it has
        read the same entries.
        """
        derived: dict[str, Any] = {}
        state = self._sessions.get(envelope.session_id)
        if state is not None and state.children is not None and len(state.children):
            if state.aggregated:
                derived[OVERALL_FIELD] = format_number(state.overall)
            derived[CHILDREN_COUNT_FIELD] = len(state.children)
            derived[CHILDREN_COMPLETED_FIELD] = state.children.completed
        parent_id = envelope.parent_id
        tally = None if parent_id is None else self._children.get(parent_id)
        if parent_id is not None and tally is not None:
            parent = self._sessions.get(parent_id)
            figure = tally.progress if parent is None else parent.overall
            derived[PARENT_PROGRESS_FIELD] = format_number(figure)
            derived[PARENT_CHILDREN_FIELD] = len(tally)
            derived[PARENT_COMPLETED_FIELD] = tally.completed
        envelope.derived = derived or None

    def latest(self, state: SessionState) -> Envelope:
        """The session's latest event as a snapshot sends it: a parent's with today's figures."""
        if state.children is None:
            return state.latest
        fresh = state.latest.renewed()
        self._derive(fresh)
        return fresh

    def _learn(self, state: SessionState, event: ProgressEvent) -> None:
        """Tell the durations store how long ``state`` took, when ``event`` completes it.

        Only a session seen running before: one seen first at its end tells nothing.
        """
        if (
            event.status == "completed"
            and not state.terminal
            and event.workflow_type == state.workflow_type
            and event.ts is not None
        ):
            self.durations.record(state.workflow_type, event.ts - state.started_at)
            for step, duration_ms in state.step_times.durations(event.ts):
                self.durations.record((state.workflow_type, step), duration_ms)

    def forget_type(self, workflow_type: str) -> int:
        """Forget every session of ``workflow_type`` (before rebuilding them from its stream)."""
        self.durations.forget(workflow_type)
        doomed = [k for k, state in self._sessions.items() if state.workflow_type == workflow_type]
        for session_id in doomed:
            self._untally(self._sessions.pop(session_id))
        return len(doomed)

    def evict(self) -> None:
        """Forget expired sessions and the oldest beyond the count limit."""
        sessions = self._sessions
        horizon = self._horizon()
        while sessions:
            oldest = next(iter(sessions.values()))
            if len(sessions) <= self._max and oldest.updated_at >= horizon:
                break
            self._untally(sessions.popitem(last=False)[1])
            self.evicted += 1

    def sessions(
        self,
        *,
        workflow_type: str | None = None,
        status: str | None = None,
        owner: str | None = None,
    ) -> Iterator[SessionState]:
        """Remembered sessions, most recently updated first, optionally filtered."""
        horizon = self._horizon()
        for state in reversed(self._sessions.values()):
            if state.updated_at < horizon:
                continue
            if workflow_type is not None and state.workflow_type != workflow_type:
                continue
            if status is not None and state.status != status:
                continue
            if owner is not None and state.owner != owner:
                continue
            yield state


def _strays(state: SessionState, event: ProgressEvent) -> bool:
    """Whether ``event`` names another parent or weight than its session's, or omits them."""
    return (state.parent_id is not None and event.parent_id != state.parent_id) or (
        state.weight is not None and event.weight != state.weight
    )

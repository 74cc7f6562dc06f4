"""Liveness: what a gateway concludes from a session that stopped reporting.

Every gateway checks its session view periodically. A running (or
cancelling) session whose latest entry is older than ``stall_after`` is
published ``stalled``, or ``completed`` with metadata ``"inferred": true``
when its latest report put it at 100% overall (see
:mod:`relay.protocol.plans`: with a plan, the last step at 100%) and
``infer_completion`` is on; one that
stays stalled ``abandon_after`` seconds more is published ``failed``.

The age is taken from the stream id of the session's latest entry, not from
its ``ts``: the id is stamped by Redis's clock as the entry is written, the
same for every worker, whereas ``ts`` comes from whoever published and may be
set by a worker whose clock is wrong (or to anything at all). Any entry counts,
heartbeats included, so raw-``XADD`` workers stay alive by writing. A
parent's children are its sign of life too: the latest entry of any of them
counts as its own (see :mod:`relay.protocol.children`), and a parent showing
its children's aggregate is inferred completed only once each of them completed.

Every gateway reaches the same decision from the same entry, and exactly one
publishes it: :data:`DECIDE_SCRIPT` sets a marker named by the session and
that entry's id (``SET NX``) and writes the event only if it set it, in one
atomic call. A gateway whose view lags behind a report that just arrived is
kept from stalling a live session by the script too: it looks through the
entries after the one the decision is about, and writes nothing if the
session has one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from redis.exceptions import RedisError

from relay.protocol.entries import now_ms
from relay.protocol.event import REPORTING_STATUSES, ProgressEvent
from relay.protocol.frames import Envelope
from relay.server.session_state import SessionState
from relay.server.session_view import SessionView
from relay.server.stream_store import StreamStore

logger = logging.getLogger(__name__)

ABANDONED_ERROR = "worker stopped reporting"

# Markers outlive the decision by a few stall times: long enough for every
# gateway's view to take the published event in, after which no gateway
# considers the entry the marker names again.
MARKER_LIFETIMES = 3

# Checks per stall time, so a session is noticed at most a tenth late.
CHECKS_PER_STALL = 10
MIN_INTERVAL, MAX_INTERVAL = 0.05, 5.0

# Entries after the decided one the script looks through for a newer report
# of the session: only a gateway whose reader lags sees such entries at all.
LATER_ENTRIES = 200


@dataclass(frozen=True, slots=True)
class LivenessRules:
    """When silence means something; ``stall_after`` 0 turns liveness off."""

    stall_after: float
    abandon_after: float = 0
    infer_completion: bool = True

    @property
    def enabled(self) -> bool:
        """Whether sessions are checked at all."""
        return self.stall_after > 0

    @property
    def interval(self) -> float:
        """Seconds between checks."""
        return min(max(self.stall_after / CHECKS_PER_STALL, MIN_INTERVAL), MAX_INTERVAL)

    @property
    def marker_ttl_ms(self) -> int:
        """How long a decision's marker lives."""
        return max(int(self.stall_after * MARKER_LIFETIMES * 1000), 1000)

    def verdict(self, state: SessionState, now: int) -> ProgressEvent | None:
        """The event the silence of ``state`` calls for at ``now`` (ms), if any."""
        heard_ms = state.heard.key.ms
        if state.children is not None:
            heard_ms = max(heard_ms, state.children.heard_ms)
        quiet_ms = now - heard_ms
        if state.status in REPORTING_STATUSES:
            if quiet_ms < self.stall_after * 1000:
                return None
            # The overall figure: at 100% of a step that is not its plan's
            # last, the workflow has steps still to run, so it is stalled.
            if self.infer_completion and state.overall >= 100 and state.children_done:
                return _follow_up(
                    state, "completed", None, metadata={**state.metadata, "inferred": True}
                )
            return _follow_up(state, "stalled", f"no report for {self.stall_after:g} s")
        if state.status == "stalled" and self.abandon_after > 0:
            if quiet_ms < self.abandon_after * 1000:
                return None
            return _follow_up(state, "failed", ABANDONED_ERROR)
        return None


def _follow_up(
    state: SessionState, status: str, error: str | None, metadata: dict[str, object] | None = None
) -> ProgressEvent:
    """The session's latest state with another status: same step, progress and metadata."""
    return ProgressEvent.model_validate(
        {
            "session_id": state.session_id,
            "workflow_type": state.workflow_type,
            "step": state.step,
            "progress": state.progress,
            "metadata": state.metadata if metadata is None else metadata,
            "status": status,
            "error": error,
            "ts": now_ms(),
        }
    )


class Liveness:
    """One gateway's periodic liveness check (run it with ``relay.server.app.periodically``)."""

    def __init__(
        self,
        rules: LivenessRules,
        store: StreamStore,
        view: SessionView,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.rules = rules
        self._store = store
        self._view = view
        self._clock = clock
        # Events this gateway published, by status, for /metrics.
        self.published_by_status: dict[str, int] = {}
        # Why the latest check failed, None once one succeeds: readiness reports it.
        self.last_error: str | None = None

    def due(self) -> Iterator[tuple[SessionState, Envelope, ProgressEvent]]:
        """Every remembered session whose silence calls for an event now.

        Each comes with the entry the decision is about (its ``heard`` entry
        now) and the event.
        """
        now = self._clock()
        for state in self._view.sessions():
            event = self.rules.verdict(state, now)
            if event is not None:
                yield state, state.heard, event

    async def check(self) -> int:
        """Publish what every silent session calls for; answers how many this gateway wrote.

        A store error ends this check (logged, kept in :attr:`last_error` for
        readiness); the next check tries again. Any other error propagates, to
        be logged with its traceback by the task that runs the checks.
        """
        written = 0
        keys = self._store.keys
        try:
            for state, heard, event in list(self.due()):
                # The view may have moved on while earlier decisions were
                # written (another gateway's decision read back, say): the
                # event decided on is about the entry heard then, or nothing.
                if state.heard is not heard:
                    continue
                receipt = await self._store.decide(
                    marker=keys.liveness(
                        keys.stream(heard.workflow_type), heard.session_id, heard.id
                    ),
                    marker_ttl_ms=self.rules.marker_ttl_ms,
                    after=heard.id,
                    event=event,
                    later_entries=LATER_ENTRIES,
                )
                if receipt is None:
                    continue  # another gateway decided, or the worker reported meanwhile
                self._view.apply(*self._view.delivered(receipt, event), ahead=True)
                counts = self.published_by_status
                counts[event.status] = counts.get(event.status, 0) + 1
                written += 1
                logger.info(
                    "session %s of %s: %s (%s)",
                    state.session_id,
                    state.workflow_type,
                    event.status,
                    event.error or "inferred from its silence at 100%",
                )
        except (RedisError, OSError) as exc:
            self.last_error = f"liveness check failing: {exc or type(exc).__name__}"
            logger.warning("%s; trying again in %.1fs", self.last_error, self.rules.interval)
            return written
        except Exception as exc:
            self.last_error = f"liveness check failing: {exc!r}"
            raise
        self.last_error = None
        return written

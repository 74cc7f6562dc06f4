"""When a session with a plan first reported each of its steps, to learn what steps take.

The session view keeps one per session and, once the session completes,
gives the durations store each step's time (see
:mod:`relay.server.durations`): from the first event of a step to the first
event of the step the session went to next, or to the completion for the
last one it ran.
"""

from __future__ import annotations

from relay.protocol.plans import MAX_PLAN_STEPS


class StepTimes:
    """The ``ts`` of a session's first event of each step, in the order the steps began."""

    __slots__ = ("_started",)

    def __init__(self) -> None:
        self._started: dict[str, int] = {}

    def take(self, step: str, ts: int) -> None:
        """Note a report of ``step`` (one its plan lists) at ``ts``; only its first counts.

        At most a plan's worth of steps are kept: a session that keeps
        declaring plans of other steps teaches nothing of the later ones.
        """
        if step not in self._started and len(self._started) < MAX_PLAN_STEPS:
            self._started[step] = ts

    def clear(self) -> None:
        """Forget every step (the session id now names a session of another type)."""
        self._started.clear()

    def durations(self, completed_at: int) -> list[tuple[str, int]]:
        """Each step's milliseconds, for a session that completed at ``completed_at``."""
        starts = list(self._started.items())
        ends = [ts for _, ts in starts[1:]] + [completed_at]
        return [(step, end - ts) for (step, ts), end in zip(starts, ends, strict=False)]

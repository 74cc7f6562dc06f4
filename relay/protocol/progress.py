"""State derived from a session's events: how long it has left.

The gateway's session view and ``relay watch`` both call
:func:`estimated_time_remaining`, and the browser client
(``clients/js/relay-client.js``) carries a line-for-line copy that a
test runs against this function on a shared table of cases. Every reader of
a session therefore shows the same figure for the same events and the same
typical durations of its type and of its plan's steps (which the gateway
learns, see :mod:`relay.server.durations`, and answers in session states,
where ``relay watch`` and the browser client take them from).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard

from relay.protocol.event import TERMINAL_STATUSES

ETA_METADATA_KEY = "estimated_time_remaining"
"""The metadata key under which a worker may give its own seconds-left figure."""

RATE_WEIGHT_HALF = 0.1
"""The share of work done at which a session's own rate and the typical duration weigh the same."""


def reported_eta(metadata: Mapping[str, Any] | None) -> float | None:
    """The worker's own seconds-left figure, when ``metadata`` carries a valid one."""
    if not isinstance(metadata, Mapping):
        return None
    value = metadata.get(ETA_METADATA_KEY)
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def estimated_time_remaining(
    *,
    status: str,
    progress: float,
    metadata: Mapping[str, Any] | None,
    first_progress: float,
    started_at: float,
    updated_at: float,
    typical_duration: float | None = None,
    typical_step_durations: Sequence[float | None] | None = None,
    step_index: int | None = None,
    step_progress: float = 0.0,
) -> float | None:
    """Seconds a session has left, as of its latest event.

    ``first_progress`` and ``started_at`` (epoch milliseconds) come from the
    first event seen of the session, ``status``, ``progress``, ``metadata``
    and ``updated_at`` from the latest. ``typical_duration`` is how many
    seconds sessions of its type typically take, when that is known (one
    that is not positive counts as unknown). With a plan,
    ``typical_step_durations`` gives the typical seconds of each of its
    steps (``None`` where unknown), ``step_index`` the current step's place
    in it (1-based) and ``step_progress`` the current step's own progress.
    The learned figure is the per-step one (see :func:`_learned`) when
    every step still to run has a typical duration, else the type's. In order:

    - a completed session has ``0`` left, whatever its last event reported;
    - a failed or cancelled one has no estimate (``None``);
    - a figure the worker gave in ``metadata`` (see :data:`ETA_METADATA_KEY`) wins;
    - without a learned figure, the average rate from the first to the
      latest event is projected to 100; ``None`` until the session has moved
      forward over some time;
    - with one, before the session has moved: the learned figure less the
      time since it started, ``None`` once that is used up (the session is
      late, and how late nothing tells);
    - with one, once it has moved: the rate's projection blended with the
      learned time left, see :func:`_blended`.

    The figure is in whole milliseconds.
    """
    if status == "completed":
        return 0.0
    if status in TERMINAL_STATUSES:
        return None
    reported = reported_eta(metadata)
    if reported is not None:
        return reported
    # Floats throughout, so the arithmetic is the IEEE double arithmetic the
    # browser's copy of this rule does, and both give the same number.
    elapsed_ms = float(updated_at) - float(started_at)
    gained = float(progress) - float(first_progress)
    moved = elapsed_ms > 0 and gained > 0
    learned = _learned(
        progress=float(progress),
        typical_duration=typical_duration,
        typical_step_durations=typical_step_durations,
        step_index=step_index,
        step_progress=float(step_progress),
    )
    if learned is None:
        if not moved:
            return None
        left_ms = (100 - float(progress)) * elapsed_ms / gained
    elif not moved:
        left_ms = learned[0] - max(elapsed_ms, 0.0)
        if not left_ms > 0:
            return None
    else:
        left_ms = _blended(
            rate_ms=(100 - float(progress)) * elapsed_ms / gained,
            learned_ms=learned[1],
            progress=float(progress),
            first_progress=float(first_progress),
        )
    return math.floor(left_ms + 0.5) / 1000


def _learned(
    *,
    progress: float,
    typical_duration: float | None,
    typical_step_durations: Sequence[float | None] | None,
    step_index: int | None,
    step_progress: float,
) -> tuple[float, float] | None:
    """What was learned of the session's time, in ms: (before it moves, from its latest event).

    Per step, when the current step and every later one have a positive
    typical duration: the current step's times the share of it left, plus
    the later steps', both before and after the session moves. Else per
    type: the whole typical duration before it moves (the time elapsed is
    taken off it), its share of the overall work left after. ``None`` when
    neither is known.
    """
    ahead = _steps_left_ms(typical_step_durations, step_index, step_progress)
    if ahead is not None:
        return ahead, ahead
    typical_ms = None if typical_duration is None else float(typical_duration) * 1000
    if typical_ms is None or not typical_ms > 0:
        return None
    return typical_ms, typical_ms * (100 - progress) / 100


def _steps_left_ms(
    typical_step_durations: Sequence[float | None] | None,
    step_index: int | None,
    step_progress: float,
) -> float | None:
    """Typical ms: the steps still to run, the current by its share left; None if one is unknown."""
    if typical_step_durations is None or step_index is None:
        return None
    if not 1 <= step_index <= len(typical_step_durations):
        return None
    left = typical_step_durations[step_index - 1 :]
    known = [float(seconds) for seconds in left if known_duration(seconds)]
    if len(known) < len(left):
        return None
    # Summed first to last, as the browser's copy does, for the same rounding.
    later_ms = 0.0
    for seconds in known[1:]:
        later_ms += seconds * 1000
    return known[0] * 1000 * (1 - step_progress / 100) + later_ms


def known_duration(seconds: object) -> TypeGuard[float]:
    """Whether ``seconds`` is a known, positive typical duration (anything else is unknown)."""
    return isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds > 0


def _blended(*, rate_ms: float, learned_ms: float, progress: float, first_progress: float) -> float:
    """The rate's projection and the learned time left, weighted.

    The rate's weight grows with the share of work done since the first
    event, ``done / (done + RATE_WEIGHT_HALF)``: early on, one session's pace
    says little and what was learned of its type more; once a good part is
    done the session's own pace tells best. ``bench/eta_error.py`` measured
    this against the rate alone, the typical duration less the time elapsed,
    and a weight equal to the share done, on the demo's workflows; it had the
    smallest median and p90 errors from 25 % on.
    """
    done = (progress - first_progress) / (100 - first_progress)
    weight = done / (done + RATE_WEIGHT_HALF)
    return weight * rate_ms + (1 - weight) * learned_ms

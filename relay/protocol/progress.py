"""State derived from a session's events: how long it has left.

The gateway's session view and ``relay watch`` both call
:func:`estimated_time_remaining`, and the browser client
(``clients/js/relay-client.js``) carries a line-for-line copy that a
test runs against this function on a shared table of cases. Every reader of
a session therefore shows the same figure for the same events.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from relay.protocol.event import TERMINAL_STATUSES

ETA_METADATA_KEY = "estimated_time_remaining"
"""The metadata key under which a worker may give its own seconds-left figure."""


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
) -> float | None:
    """Seconds a session has left, as of its latest event.

    ``first_progress`` and ``started_at`` (epoch milliseconds) come from the
    first event seen of the session, ``status``, ``progress``, ``metadata``
    and ``updated_at`` from the latest. In order:

    - a completed session has ``0`` left, whatever its last event reported;
    - a failed or cancelled one has no estimate (``None``);
    - a figure the worker gave in ``metadata`` (see :data:`ETA_METADATA_KEY`) wins;
    - otherwise the average rate from the first to the latest event is
      projected to 100, in whole milliseconds; ``None`` until the session
      has moved forward over some time.
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
    if not (elapsed_ms > 0 and gained > 0):
        return None
    left_ms = (100 - float(progress)) * elapsed_ms / gained
    return math.floor(left_ms + 0.5) / 1000

"""How often a running session must be heard from: the rule shared by gateways and reporters.

A gateway calls a running session *stalled* once it has had no report for
its stall time (``RELAY_STALL_AFTER``, default :data:`DEFAULT_STALL_AFTER`).
A reporter whose body runs longer than that between reports keeps its
session alive by repeating its latest report every
:func:`heartbeat_interval` seconds: a fraction of the stall time, so that a
heartbeat or two may be late or lost before a live worker looks stalled.
"""

from __future__ import annotations

# Seconds without a report after which a running session is stalled: jobs of
# a few minutes report every few seconds, so a minute of silence means trouble.
DEFAULT_STALL_AFTER = 60.0

# Heartbeats per stall time.
HEARTBEATS_PER_STALL = 3


def heartbeat_interval(stall_after: float = DEFAULT_STALL_AFTER) -> float:
    """Seconds between heartbeats for a gateway that stalls sessions after ``stall_after``."""
    return stall_after / HEARTBEATS_PER_STALL

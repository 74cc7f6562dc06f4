"""The plans one session declared, each from the entry that declared it on.

A session's plan may be replaced by a later event, and a replay of an older
entry must be delivered with the plan that held for it, so the session view
keeps the latest few plans, each with the stream id of the entry that brought
it (see :mod:`relay.protocol.plans` for the rule they serve).
"""

from __future__ import annotations

from relay.protocol.event import ProgressEvent
from relay.protocol.plans import PlanPosition, PlanStep, position
from relay.protocol.stream_ids import StreamId

# Plans remembered per session, the latest ones: a replay of an entry older
# than all of them is delivered without its place in a plan.
MAX_PLANS_KEPT = 8

Plan = tuple[PlanStep, ...]


def plan_position(plan: Plan | None, event: ProgressEvent) -> PlanPosition | None:
    """Where ``event`` stands in ``plan``; None without a plan."""
    if plan is None:
        return None
    return position(plan, event.step, event.progress, event.status)


class DeclaredPlans:
    """A session's latest plans, oldest first, each with the entry that declared it."""

    __slots__ = ("_plans",)

    def __init__(self) -> None:
        self._plans: list[tuple[StreamId, Plan]] = []

    def take(self, key: StreamId, event: ProgressEvent) -> None:
        """Note the plan the session's event at ``key`` declares, if it declares one."""
        if event.plan is not None:
            self._plans.append((key, tuple(event.plan)))
            del self._plans[:-MAX_PLANS_KEPT]

    def clear(self) -> None:
        """Forget every plan (the session id now names a session of another type)."""
        self._plans.clear()

    @property
    def latest(self) -> Plan | None:
        """The plan declared last, if any."""
        return self._plans[-1][1] if self._plans else None

    def at(self, key: StreamId) -> Plan | None:
        """The plan that held for the session's entry at ``key``, if one is remembered."""
        for since, plan in reversed(self._plans):
            if since <= key:
                return plan
        return None

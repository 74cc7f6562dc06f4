"""The children of one parent session, tallied as their events arrive.

A tally is kept per parent id, whether or not the parent itself is known
yet: children reported before their parent's first event are remembered,
and the parent's state takes the tally once it appears. Each child's part
is replaced as its events arrive, so an event costs O(1) whatever the number
of children, and the sums are exact integers (see :mod:`relay.protocol.children`).
The tally holds only children the session view remembers: a child forgotten
by the view leaves its parent's tally too.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from itertools import islice

from relay.protocol.children import (
    MAX_CHILDREN_LISTED,
    scaled_share,
    scaled_weight,
    weighted_mean,
)
from relay.protocol.event import TERMINAL_STATUSES


@dataclass(frozen=True, slots=True)
class ChildPart:
    """What one child contributes: its weight, its status and its share, in millionths."""

    weight: int
    status: str
    share: int


class ChildrenTally:
    """One parent's children: their parts, sums and counts by status."""

    __slots__ = ("_parts", "_shares", "_weights", "by_status", "heard_ms", "updated_at")

    def __init__(self) -> None:
        # Latest updated last, so the listing can name the latest children first.
        self._parts: OrderedDict[str, ChildPart] = OrderedDict()
        self._shares = 0
        self._weights = 0
        self.by_status: dict[str, int] = {}
        # The stream-id time of the latest entry of any child, and its latest ts.
        self.heard_ms = 0
        self.updated_at = 0

    def __len__(self) -> int:
        return len(self._parts)

    def count(self, child_id: str, weight: float, status: str, overall: float) -> None:
        """Take the child's latest figures in place of those it had."""
        self.drop(child_id)
        part = ChildPart(scaled_weight(weight), status, scaled_share(weight, status, overall))
        self._parts[child_id] = part
        self._shares += part.share
        self._weights += part.weight
        self.by_status[status] = self.by_status.get(status, 0) + 1

    def heard(self, heard_ms: int, updated_at: int) -> None:
        """A child's entry was read: its children are the parent's sign of life."""
        self.heard_ms = max(self.heard_ms, heard_ms)
        self.updated_at = max(self.updated_at, updated_at)

    def drop(self, child_id: str) -> None:
        """Forget one child (its part is replaced, or the view forgot it)."""
        part = self._parts.pop(child_id, None)
        if part is None:
            return
        self._shares -= part.share
        self._weights -= part.weight
        left = self.by_status[part.status] - 1
        if left:
            self.by_status[part.status] = left
        else:
            del self.by_status[part.status]

    @property
    def progress(self) -> float:
        """The weighted mean of the children's figures (see relay.protocol.children)."""
        return weighted_mean(self._shares, self._weights)

    @property
    def completed(self) -> int:
        """Children that completed."""
        return self.by_status.get("completed", 0)

    @property
    def ongoing(self) -> int:
        """Children that have not ended."""
        return len(self._parts) - sum(self.by_status.get(s, 0) for s in TERMINAL_STATUSES)

    def ids(self, limit: int = MAX_CHILDREN_LISTED) -> list[str]:
        """The ids of the latest updated children, at most ``limit``, the latest first."""
        return list(islice(reversed(self._parts), limit))

    def ongoing_ids(self) -> list[str]:
        """Every child that has not ended."""
        return [k for k, part in self._parts.items() if part.status not in TERMINAL_STATUSES]

"""Child sessions: a parent session's one bar over the sessions it started.

A worker that fans out names the parent in its sessions' events
(``parent_id``, a session id) and, optionally, each child's share of the
parent (``weight``, default 1). Both belong to the child session: the first
event naming a parent sets it for good, the first naming a weight sets that,
and later events may omit them.

The parent's progress, when it declares none of its own (its reports never
went above 0 and it has no plan), is the weighted mean of its children's
figures (:func:`child_figure`): a completed child counts 100, any other,
failed and cancelled ones included, counts the overall progress where it
stopped, so a parent with a failed child never shows 100.

Children are counted one level down: a child that is itself a parent
contributes its own overall figure as of its latest event, and nothing walks
further, so a cycle of parents costs nothing.

This module is the one source of the rule and its limits; the gateway's
session view keeps the tallies, and the browser client and ``relay watch``
take the gateway's figures.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# A parent's own delivered event gives its aggregate in the field a plan's overall figure uses.
from relay.protocol.plans import OVERALL_FIELD

MAX_CHILD_WEIGHT = 1_000_000
"""A child's weight is more than 0 and at most this much; the default is 1."""

DEFAULT_CHILD_WEIGHT = 1

MAX_CHILDREN_LISTED = 100
"""A parent's state lists the ids of at most this many children, the latest first;
its counts cover every child the gateway remembers."""

PARENT_FIELD, WEIGHT_FIELD = "parent_id", "weight"

# What a gateway adds to the ``data`` of a child's delivered event: its
# parent's overall progress after the event, and its children counted and completed.
PARENT_PROGRESS_FIELD = "parent_progress"
PARENT_CHILDREN_FIELD = "parent_children_count"
PARENT_COMPLETED_FIELD = "parent_children_completed"
# What a gateway adds to the ``data`` of a parent's own delivered event.
CHILDREN_COUNT_FIELD = "children_count"
CHILDREN_COMPLETED_FIELD = "children_completed"

CHILD_FIELDS = (
    PARENT_PROGRESS_FIELD,
    PARENT_CHILDREN_FIELD,
    PARENT_COMPLETED_FIELD,
    CHILDREN_COUNT_FIELD,
    CHILDREN_COMPLETED_FIELD,
)


def child_figure(status: str, overall: float) -> float:
    """What one child counts toward its parent: 100 once completed, else its overall figure."""
    return 100.0 if status == "completed" else overall


# Weights and shares are counted in millionths, as integers: sums of integers
# are exact, so every gateway reaches the same figure whatever order it took
# the children's events in (floats summed in another order may differ).
SCALE = 1_000_000


def scaled_weight(weight: float) -> int:
    """A child's weight in millionths (a weight below half a millionth counts nothing)."""
    return round(weight * SCALE)


def scaled_share(weight: float, status: str, overall: float) -> int:
    """A child's weight times its figure (:func:`child_figure`), in millionths."""
    return round(weight * child_figure(status, overall) * SCALE)


def weighted_mean(shares: int, weights: int) -> float:
    """The parent's aggregate from the sums of scaled shares and weights; 0 without weight."""
    if weights <= 0:
        return 0.0
    return min(shares / weights, 100.0)


def family_in(data: Mapping[str, Any]) -> dict[str, int | float]:
    """The figures about children or parent a gateway added to a delivered event's ``data``.

    For subscribers: the fields come from a gateway, and what is not a number
    is left out. With a parent's children counted, its ``overall_progress`` is
    taken too (without a plan, it is their aggregate).
    """
    names = (*CHILD_FIELDS, OVERALL_FIELD) if CHILDREN_COUNT_FIELD in data else CHILD_FIELDS
    return {
        name: data[name]
        for name in names
        if isinstance(data.get(name), int | float) and not isinstance(data.get(name), bool)
    }

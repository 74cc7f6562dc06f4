"""Plans: the weighted steps a workflow declares up front, and the overall progress they give.

A worker may send ``plan`` (a list of ``{"step", "weight"}``) with any event;
it holds for the session until an event brings another. It then reports each
step's own 0-100 progress, as workers without a plan do. Where the current
step sits in the plan gives the whole workflow's progress
(:func:`position`): the steps before it count as done, the current one
counts its share, and the steps after it count nothing yet.

This module is the one source of the rule: the gateway's session view and
the figures it adds to delivered events call it; the browser client and
``relay watch`` take the gateway's figures rather than working them out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeGuard

from pydantic import BaseModel, ConfigDict, Field, field_validator

from relay.protocol.numbers import format_number

MAX_PLAN_STEPS = 64
"""A plan lists at most this many steps."""

MAX_STEP_WEIGHT = 1_000_000
"""A step weighs more than 0 and at most this much; the default weight is 1."""

MAX_STEP_CHARS = 128
"""A step's name, in a plan or in an event, has 1 to this many printable characters."""


# The fields a delivered event of a session with a plan gains (see PlanPosition.fields).
OVERALL_FIELD, STEP_INDEX_FIELD, STEP_COUNT_FIELD = "overall_progress", "step_index", "step_count"
POSITION_FIELDS = (OVERALL_FIELD, STEP_INDEX_FIELD, STEP_COUNT_FIELD)


def check_step_name(step: str) -> str:
    """A step name is printable text (its length is bounded by the field)."""
    if not step.isprintable():
        raise ValueError("step must contain printable characters only")
    return step


StepName = Annotated[str, Field(min_length=1, max_length=MAX_STEP_CHARS)]


class PlanStep(BaseModel):
    """One step of a plan: its name, as the worker's reports will give it, and its weight."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    step: StepName
    weight: float = Field(default=1, gt=0, le=MAX_STEP_WEIGHT, allow_inf_nan=False)

    @field_validator("step")
    @classmethod
    def _printable(cls, step: str) -> str:
        return check_step_name(step)


Plan = Sequence[PlanStep]

# How a worker may write a plan in code: step names, or (name, weight) pairs.
PlanSpec = Sequence[str | tuple[str, float]]


def plan_steps(spec: PlanSpec) -> list[PlanStep]:
    """The plan ``spec`` describes, validated: a name alone weighs 1."""
    steps = [
        PlanStep(step=item) if isinstance(item, str) else PlanStep(step=item[0], weight=item[1])
        for item in spec
    ]
    if not 1 <= len(steps) <= MAX_PLAN_STEPS:
        raise ValueError(f"a plan lists 1 to {MAX_PLAN_STEPS} steps, not {len(steps)}")
    return steps


def plan_json(plan: Plan) -> list[dict[str, str | int | float]]:
    """The plan as JSON carries it: whole weights as integers."""
    return [{"step": item.step, "weight": format_number(item.weight)} for item in plan]


@dataclass(frozen=True, slots=True)
class PlanPosition:
    """Where one report stands in its session's plan.

    ``step_index`` is 1-based (step 1 of 3), as people count, and ``None``
    for a step the plan does not list; ``overall`` is then ``None`` too:
    the report says nothing about the whole, which stays where it was.
    """

    step_index: int | None
    step_count: int
    overall: float | None

    def fields(self) -> dict[str, float | int | None]:
        """The fields a delivered event's ``data`` carries for this position."""
        return {
            OVERALL_FIELD: None if self.overall is None else format_number(self.overall),
            STEP_INDEX_FIELD: self.step_index,
            STEP_COUNT_FIELD: self.step_count,
        }


def position_in(data: Mapping[str, Any]) -> PlanPosition | None:
    """The position a delivered event's ``data`` carries, if its session has a plan.

    For subscribers: the fields come from a gateway, and what is not a number
    where one belongs is taken as absent.
    """
    count = data.get(STEP_COUNT_FIELD)
    if not _number(count):
        return None
    index, overall = data.get(STEP_INDEX_FIELD), data.get(OVERALL_FIELD)
    return PlanPosition(
        int(index) if _number(index) else None,
        int(count),
        float(overall) if _number(overall) else None,
    )


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def position(plan: Plan, step: str, progress: float, status: str) -> PlanPosition:
    """Where a report of ``step`` at ``progress`` (0-100) stands in ``plan``.

    Overall progress is the weight of the steps before the current one plus
    the current step's weight times its progress, over the plan's total
    weight, as a percentage. A completed session is at 100 whatever step it
    names; any other report of a step the plan does not list has no overall figure.
    """
    # A step listed twice is found at its first listing: JSON Schema cannot
    # state that names are unique, and the document states every rule.
    index = next((i for i, item in enumerate(plan) if item.step == step), None)
    count = len(plan)
    if status == "completed":
        return PlanPosition(None if index is None else index + 1, count, 100.0)
    if index is None:
        return PlanPosition(None, count, None)
    total = sum(item.weight for item in plan)
    done = sum(item.weight for item in plan[:index])
    overall = (done + plan[index].weight * progress / 100) / total * 100
    return PlanPosition(index + 1, count, min(overall, 100.0))

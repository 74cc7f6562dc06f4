"""Plans: the overall-progress rule, and plans in bodies, stream entries and delivered data."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from relay.protocol.entries import EntryError, event_from_entry
from relay.protocol.event import ProgressEvent, event_from_data, parse_event_json
from relay.protocol.plans import MAX_PLAN_STEPS, PlanPosition, PlanStep, position

PLAN = (
    PlanStep(step="analyzing", weight=1),
    PlanStep(step="generating", weight=6),
    PlanStep(step="rendering", weight=3),
)

# (step, its progress, status, expected position)
CASES: list[tuple[str, float, str, PlanPosition]] = [
    ("analyzing", 0, "running", PlanPosition(1, 3, 0.0)),
    ("analyzing", 10, "running", PlanPosition(1, 3, 1.0)),
    ("analyzing", 100, "running", PlanPosition(1, 3, 10.0)),
    ("generating", 0, "running", PlanPosition(2, 3, 10.0)),
    ("generating", 50, "running", PlanPosition(2, 3, 40.0)),
    ("rendering", 100, "running", PlanPosition(3, 3, 100.0)),
    ("rendering", 100, "stalled", PlanPosition(3, 3, 100.0)),
    ("generating", 20, "failed", PlanPosition(2, 3, 22.0)),
    ("unplanned", 50, "running", PlanPosition(None, 3, None)),
    ("unplanned", 50, "completed", PlanPosition(None, 3, 100.0)),
    ("analyzing", 10, "completed", PlanPosition(1, 3, 100.0)),
]


@pytest.mark.parametrize(("step", "progress", "status", "expected"), CASES)
def test_overall_progress_counts_the_steps_before_and_a_share_of_the_current(
    step: str, progress: float, status: str, expected: PlanPosition
) -> None:
    found = position(PLAN, step, progress, status)
    assert (found.step_index, found.step_count) == (expected.step_index, expected.step_count)
    if expected.overall is None:
        assert found.overall is None
    else:
        assert found.overall == pytest.approx(expected.overall)


def test_equal_default_weights_split_the_whole_evenly_and_a_repeat_counts_first() -> None:
    plan = (PlanStep(step="a"), PlanStep(step="b"), PlanStep(step="a"), PlanStep(step="c"))
    assert position(plan, "b", 50, "running").overall == pytest.approx(37.5)
    assert position(plan, "a", 100, "running") == PlanPosition(1, 4, 25.0)


def body(plan: Any) -> bytes:
    return orjson.dumps(
        {"session_id": "s1", "workflow_type": "map", "step": "a", "progress": 5, "plan": plan}
    )


def test_a_plan_travels_in_the_body_the_entry_and_the_data() -> None:
    event = parse_event_json(body([{"step": "a"}, {"step": "b", "weight": 2.5}]))
    assert event.plan == [PlanStep(step="a", weight=1), PlanStep(step="b", weight=2.5)]
    fields = event.stream_fields(1)
    assert orjson.loads(fields["plan"]) == [
        {"step": "a", "weight": 1},
        {"step": "b", "weight": 2.5},
    ]
    read = event_from_entry("map", "1-0", fields)
    assert read.plan == event.plan
    assert event.data()["plan"] == [{"step": "a", "weight": 1}, {"step": "b", "weight": 2.5}]
    no_plan = ProgressEvent(session_id="s1", workflow_type="map", step="a", progress=5)
    assert "plan" not in no_plan.stream_fields(1)
    assert "plan" not in no_plan.data()


def test_event_from_data_leaves_the_delivered_position_out() -> None:
    event = parse_event_json(body([{"step": "a"}]))
    data = {**event.data(), **position(event.plan or (), "a", 5, "running").fields()}
    assert data["overall_progress"] == 5.0
    assert data["step_index"] == 1
    assert event_from_data(data) == event


@pytest.mark.parametrize(
    "plan",
    [
        [],
        "analyzing",
        [{"step": ""}],
        [{"step": "a\n"}],
        [{"step": "a", "weight": 0}],
        [{"step": "a", "weight": -1}],
        [{"step": "a", "weight": "1"}],
        [{"step": "a", "extra": 1}],
        [{"step": f"s{n}"} for n in range(MAX_PLAN_STEPS + 1)],
    ],
)
def test_a_bad_plan_is_refused_with_the_field_named(plan: Any) -> None:
    with pytest.raises(ValidationError) as raised:
        parse_event_json(body(plan))
    assert all(str(e["loc"][0]) == "plan" for e in raised.value.errors())


@pytest.mark.parametrize(
    "text",
    ["[", "not json", "[]", '{"step": "a"}', '[{"step": "a", "weight": 0}]', '[{"weight": 1}]'],
)
def test_a_bad_plan_in_a_stream_entry_is_an_entry_error_naming_it(text: str) -> None:
    with pytest.raises(EntryError, match="plan"):
        event_from_entry(
            "map", "1-0", {"session_id": "s1", "step": "a", "progress": "5", "plan": text}
        )

"""What each step of a plan typically takes, learned by the session view from completed sessions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from relay.protocol.event import ProgressEvent
from relay.protocol.frames import Envelope
from relay.protocol.plans import MAX_PLAN_STEPS
from relay.protocol.progress import estimated_time_remaining
from relay.server.answers import SessionStateAnswer
from relay.server.durations import Durations
from relay.server.openapi import document
from relay.server.session_view import SessionView
from relay.server.settings import Settings
from relay.server.step_times import StepTimes

NOW = 1_700_000_000_000
PLAN = [{"step": "fetch", "weight": 1}, {"step": "render", "weight": 3}, {"step": "upload"}]


def entry(at_s: float, session: str, step: str, progress: float, **fields: Any) -> Any:
    values: dict[str, Any] = {
        "session_id": session,
        "workflow_type": "map",
        "step": step,
        "progress": progress,
        "ts": NOW + round(at_s * 1000),
    }
    values.update(fields)
    event = ProgressEvent.model_validate(values)
    # Sessions' entries of one millisecond are told apart by the session's number.
    return Envelope.of(f"{values['ts']}-{session.lstrip('sn')}", event), event


def planned(session: str, start: float, fetch: float, render: float, upload: float) -> list[Any]:
    """A session of PLAN whose steps take the given seconds, reporting twice a step."""
    at = start
    reports = [
        entry(at, session, "fetch", 0, plan=PLAN),
        entry(at + fetch / 2, session, "fetch", 50),
    ]
    at += fetch
    reports += [entry(at, session, "render", 0), entry(at + render / 2, session, "render", 50)]
    at += render
    reports += [entry(at, session, "upload", 0), entry(at + upload / 2, session, "upload", 50)]
    at += upload
    reports.append(entry(at, session, "upload", 100, status="completed"))
    return reports


def make_view() -> SessionView:
    return SessionView(ttl_ms=3_600_000, max_sessions=100, clock=lambda: NOW + 1_000_000)


def fed(*sessions: list[Any]) -> SessionView:
    view = make_view()
    for reports in sessions:
        for envelope, event in reports:
            view.apply(envelope, event)
    return view


def test_step_times_run_to_the_next_step_begun_or_to_the_end() -> None:
    times = StepTimes()
    assert times.durations(5_000) == []
    times.take("a", 1_000)
    times.take("a", 1_500)  # only a step's first report counts
    times.take("c", 2_000)  # the session went on to another step than the plan's next
    times.take("b", 4_000)
    times.take("a", 4_500)  # back to an earlier one: still its first report
    assert times.durations(7_000) == [("a", 1_000), ("c", 2_000), ("b", 3_000)]
    times.clear()
    assert times.durations(7_000) == []


def test_step_times_keep_at_most_a_plans_worth() -> None:
    times = StepTimes()
    for n in range(MAX_PLAN_STEPS + 5):
        times.take(f"s{n}", n)
    assert len(times.durations(10**6)) == MAX_PLAN_STEPS


def test_the_view_learns_the_median_of_each_step() -> None:
    view = fed(
        planned("s1", 0, 2, 10, 4),
        planned("s2", 100, 4, 20, 2),
        planned("s3", 200, 3, 30, 6),
    )
    assert view.durations.typical_steps("map", ["fetch", "render", "upload"]) == [3.0, 20.0, 4.0]
    assert view.durations.typical("map") == 26.0  # the whole sessions': 16, 26, 39
    view.durations.forget("map")
    assert view.durations.typical_steps("map", ["fetch", "render"]) == [None, None]
    assert view.durations.typical("map") is None


def test_unfinished_sessions_and_steps_outside_the_plan_teach_nothing() -> None:
    failed = planned("s2", 100, 50, 50, 50)
    failed[-1] = entry(250, "s2", "upload", 50, status="failed", error="boom")
    stray = planned("s3", 300, 1, 1, 1)
    stray.insert(1, entry(300.5, "s3", "unplanned", 10))
    view = fed(planned("s1", 0, 2, 10, 4), failed, stray)
    assert view.durations.typical_steps("map", ["fetch", "render", "upload"]) == [1.5, 5.5, 2.5]
    assert view.durations.typical(("map", "unplanned")) is None


def test_a_new_session_is_estimated_from_its_steps() -> None:
    view = fed(planned("s1", 0, 2, 10, 4), planned("s2", 100, 4, 20, 2))
    view.apply(*entry(500, "n1", "fetch", 0, plan=PLAN))
    state = view.get("n1")
    assert state is not None
    body = state.as_dict()
    assert body["typical_step_durations"] == [3.0, 15.0, 3.0]
    assert body["typical_duration"] == 21.0
    assert body["estimated_time_remaining"] == 21.0  # not moved: the steps' sum
    view.apply(*entry(501, "n1", "fetch", 0, metadata={"note": "slow"}))
    assert state.estimated_time_remaining() == 20.0  # a second gone
    view.apply(*entry(504, "n1", "render", 40))

    # The rate (overall 44 % of the whole in 4 s) blended with 60 % of render and upload.
    point: dict[str, Any] = {"status": "running", "progress": 44, "metadata": {}}
    point.update(first_progress=0, started_at=NOW + 500_000, updated_at=NOW + 504_000)

    def rule(**learned: Any) -> float | None:
        return estimated_time_remaining(**point, typical_duration=21.0, **learned)

    by_steps = rule(typical_step_durations=[3.0, 15.0, 3.0], step_index=2, step_progress=40)
    assert state.estimated_time_remaining() == by_steps
    by_type = rule()
    assert state.estimated_time_remaining() != by_type


def test_without_every_step_still_to_run_known_the_rule_is_the_types() -> None:
    other_plan = [{"step": "fetch"}, {"step": "render"}, {"step": "polish"}]
    view = fed(planned("s1", 0, 2, 10, 4))
    view.apply(*entry(500, "n1", "fetch", 0, plan=other_plan))
    state = view.get("n1")
    assert state is not None
    assert state.typical_step_durations() == [2.0, 10.0, None]
    assert state.estimated_time_remaining() == 16.0  # the type's typical duration
    view.apply(*entry(500, "n2", "fetch", 0))
    unplanned = view.get("n2")
    assert unplanned is not None
    assert unplanned.as_dict()["typical_step_durations"] is None


def test_a_rebuilt_view_learns_the_same_steps() -> None:
    sessions = [planned("s1", 0, 2, 10, 4), planned("s2", 100, 4, 20, 2)]
    first, second = fed(*sessions), fed(*sessions)
    steps = ["fetch", "render", "upload"]
    assert first.durations.typical_steps("map", steps) == second.durations.typical_steps(
        "map", steps
    )


def test_steps_and_types_share_the_stores_bound() -> None:
    store = Durations(max_keys=2)
    store.record("map", 1_000)
    store.record(("map", "fetch"), 2_000)
    store.record(("map", "render"), 3_000)
    assert store.typical("map") is None
    assert store.typical_steps("map", ["fetch", "render"]) == [2.0, 3.0]


def test_the_answer_model_and_the_docs_name_the_step_figures() -> None:
    view = fed(planned("s1", 0, 2, 10, 4))
    view.apply(*entry(500, "n1", "fetch", 0, plan=PLAN))
    state = view.get("n1")
    assert state is not None
    body = state.as_dict()
    assert set(body) == set(SessionStateAnswer.model_fields)
    assert SessionStateAnswer.model_validate(body).typical_step_durations == [2.0, 10.0, 4.0]
    assert (
        "typical_step_durations"
        in document(Settings())["components"]["schemas"]["SessionStateAnswer"]["properties"]
    )
    root = Path(__file__).parents[2]
    for page in ("README.md", "docs/protocol.md"):
        assert "`typical_step_durations`" in (root / page).read_text(encoding="utf-8")
    types = (root / "clients" / "js" / "index.d.ts").read_text(encoding="utf-8")
    assert "typicalStepDurations" in types

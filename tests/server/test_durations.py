"""The durations store, and the session view that teaches it what completed sessions took."""

from __future__ import annotations

from pathlib import Path

from relay.protocol.event import ProgressEvent
from relay.protocol.frames import Envelope
from relay.protocol.progress import RATE_WEIGHT_HALF, estimated_time_remaining
from relay.server.durations import MAX_KEYS, SAMPLES_PER_KEY, Durations
from relay.server.session_view import SessionView

NOW = 1_700_000_000_000


def test_typical_is_the_median_in_whole_milliseconds() -> None:
    store = Durations()
    assert store.typical("map") is None
    for duration in (10_000, 30_000, 20_000):
        store.record("map", duration)
    assert store.typical("map") == 20.0
    store.record("map", 3_600_000)  # one that hung barely moves it
    assert store.typical("map") == 25.0
    store.record("map", 1)
    assert store.typical("map") == 20.0
    assert store.typical("character") is None


def test_a_median_between_milliseconds_rounds_half_up() -> None:
    store = Durations()
    store.record("map", 1_000)
    store.record("map", 1_001)
    assert store.typical("map") == 1.001


def test_durations_that_are_not_positive_are_left_out() -> None:
    store = Durations()
    store.record("map", 0)
    store.record("map", -5)
    assert store.typical("map") is None
    assert len(store) == 0


def test_only_the_latest_samples_count() -> None:
    store = Durations()
    for _ in range(SAMPLES_PER_KEY):
        store.record("map", 1_000)
    assert store.typical("map") == 1.0
    for _ in range(SAMPLES_PER_KEY // 2 + 1):
        store.record("map", 9_000)
    assert store.typical("map") == 9.0
    for _ in range(SAMPLES_PER_KEY):
        store.record("map", 5_000)
    assert store.typical("map") == 5.0  # every older sample is gone


def test_keys_are_bounded_and_the_least_recently_completed_go_first() -> None:
    store = Durations(max_keys=3)
    for key in ("a", "b", "c"):
        store.record(key, 1_000)
    store.record("a", 1_000)
    store.record("d", 4_000)
    assert len(store) == 3
    assert store.typical("b") is None
    assert [store.typical(k) for k in ("a", "c", "d")] == [1.0, 1.0, 4.0]
    assert MAX_KEYS >= 100


def test_forget_drops_a_key() -> None:
    store = Durations()
    store.record("map", 1_000)
    assert store.typical("map") == 1.0
    store.forget("map")
    assert store.typical("map") is None


def entry(n: int, session: str, **fields: object) -> tuple[Envelope, ProgressEvent]:
    values: dict[str, object] = {
        "session_id": session,
        "workflow_type": "map",
        "step": "s",
        "progress": 10,
        "ts": NOW + n * 1000,
    }
    values.update(fields)
    event = ProgressEvent.model_validate(values)
    # Entries of one millisecond are told apart by the session's number.
    return Envelope.of(f"{NOW + n * 1000}-{session.lstrip('sn')}", event), event


def entries() -> list[tuple[Envelope, ProgressEvent]]:
    """Sessions 1 to 4 take 10, 20, 40 and (inferred) 30 s; others end otherwise."""
    return [
        entry(0, "s1"),
        entry(0, "s2"),
        entry(0, "s3"),
        entry(0, "s4"),
        entry(0, "s5"),
        entry(0, "s6"),
        entry(10, "s1", status="completed", progress=100),
        entry(11, "s1", status="completed", progress=100),  # a second end counts once
        entry(20, "s2", status="completed", progress=100),
        entry(30, "s4", status="completed", progress=100, metadata={"inferred": True}),
        entry(40, "s3", status="completed", progress=100),
        entry(50, "s5", status="failed", error="boom"),
        entry(60, "s6", status="cancelled"),
        entry(70, "s7", status="completed", progress=100),  # seen only at its end
    ]


def make_view() -> SessionView:
    return SessionView(ttl_ms=3_600_000, max_sessions=100, clock=lambda: NOW + 100_000)


def test_the_view_learns_from_completed_sessions_only() -> None:
    view = make_view()
    for envelope, event in entries():
        view.apply(envelope, event)
    assert view.durations.typical("map") == 25.0  # median of 10, 20, 30, 40
    envelope, event = entry(80, "n1", progress=5)
    view.apply(envelope, event)
    state = view.get("n1")
    assert state is not None
    body = state.as_dict()
    assert body["typical_duration"] == 25.0
    assert body["estimated_time_remaining"] == 25.0  # not moved yet: nothing elapsed
    envelope, event = entry(90, "n1", progress=5, step="another step")
    view.apply(envelope, event)
    assert state.as_dict()["estimated_time_remaining"] == 15.0  # 10 s of 25 gone, no progress
    envelope, event = entry(110, "n1", progress=5, step="late")
    view.apply(envelope, event)
    assert state.estimated_time_remaining() is None  # overdue: how late, nothing tells
    envelope, event = entry(120, "n1", progress=50)
    view.apply(envelope, event)
    assert state.estimated_time_remaining() == estimated_time_remaining(
        status="running",
        progress=50,
        metadata={},
        first_progress=5,
        started_at=NOW + 80_000,
        updated_at=NOW + 120_000,
        typical_duration=25.0,
    )
    assert state.estimated_time_remaining() != 40.0  # what the rate alone says


def test_a_type_forgotten_and_read_again_learns_the_same() -> None:
    view = make_view()
    for envelope, event in entries():
        view.apply(envelope, event)
    view.forget_type("map")
    assert view.durations.typical("map") is None
    for envelope, event in entries():
        view.apply(envelope, event)
    assert view.durations.typical("map") == 25.0
    rebuilt = make_view()
    for envelope, event in entries():
        rebuilt.apply(envelope, event)
    assert rebuilt.durations.typical("map") == view.durations.typical("map")


def test_without_completed_sessions_the_rule_is_the_rate() -> None:
    view = make_view()
    view.apply(*entry(0, "s1", progress=0))
    view.apply(*entry(4, "s1", progress=40))
    state = view.get("s1")
    assert state is not None
    assert state.as_dict()["typical_duration"] is None
    assert state.estimated_time_remaining() == 6.0


def test_the_protocol_page_states_the_limits_and_the_weight() -> None:
    page = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text(encoding="utf-8")
    flat = " ".join(page.split())
    assert f"the latest {SAMPLES_PER_KEY} completed ones" in flat
    assert f"at most {MAX_KEYS:,} types" in flat
    assert f"`done / (done + {RATE_WEIGHT_HALF})`" in flat

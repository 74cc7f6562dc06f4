"""The in-memory session view: latest state, terminal states, ETA, bounds."""

from __future__ import annotations

from relay.protocol.event import ProgressEvent
from relay.protocol.frames import Envelope
from relay.protocol.stream_ids import StreamId
from relay.server.session_view import SessionView

NOW = 1_700_000_000_000


def feed(view: SessionView, n: int, session: str = "s1", **fields: object) -> Envelope:
    values: dict[str, object] = {
        "session_id": session,
        "workflow_type": "map",
        "step": f"step{n}",
        "progress": 10,
        "ts": NOW + n * 1000,
    }
    values.update(fields)
    event = ProgressEvent.model_validate(values)
    envelope = Envelope.of(f"{NOW + n * 1000}-0", event)
    view.apply(envelope, event)
    return envelope


def make_view(**kwargs: int) -> SessionView:
    options = {"ttl_ms": 3_600_000, "max_sessions": 100, **kwargs}
    return SessionView(clock=lambda: NOW + 10_000, **options)


def test_state_follows_the_latest_event_and_keeps_the_start() -> None:
    view = make_view()
    feed(view, 0, progress=0)
    last = feed(view, 4, progress=40, metadata={"details": "forests"})
    state = view.get("s1")
    assert state is not None
    body = state.as_dict()
    assert (body["first_progress"], body["started_at"]) == (0, NOW)
    assert body["updated_at"] == NOW + 4000
    assert body["progress"] == 40
    assert body["step"] == "step4"
    assert body["metadata"] == {"details": "forests"}
    assert body["last_event_id"] == last.id
    assert body["status"] == "running"
    # 40 points in 4 s: 60 more take 6 s
    assert body["estimated_time_remaining"] == 6.0


def test_reported_eta_wins_and_unknown_is_none() -> None:
    view = make_view()
    feed(view, 0, progress=5)
    state = view.get("s1")
    assert state is not None
    assert state.estimated_time_remaining() is None  # one event: no rate yet
    feed(view, 1, progress=5, metadata={"estimated_time_remaining": 42})
    assert state.estimated_time_remaining() == 42.0


def test_terminal_state_is_final() -> None:
    view = make_view()
    feed(view, 0)
    feed(view, 1, status="failed", error="GPU on fire", progress=30)
    feed(view, 2, progress=50)  # a stray late report
    state = view.get("s1")
    assert state is not None
    assert state.status == "failed"
    assert state.error == "GPU on fire"
    assert state.terminal
    assert state.estimated_time_remaining() is None
    feed(view, 3, status="completed", progress=100, session="s2")
    completed = view.get("s2")
    assert completed is not None
    assert completed.estimated_time_remaining() == 0.0


def test_a_completed_session_has_nothing_left_whatever_it_reported() -> None:
    view = make_view()
    feed(view, 0, progress=10)
    feed(view, 1, progress=100, status="completed", metadata={"estimated_time_remaining": 30})
    state = view.get("s1")
    assert state is not None
    assert state.as_dict()["estimated_time_remaining"] == 0.0
    feed(view, 2, session="s2", status="cancelled", metadata={"estimated_time_remaining": 30})
    cancelled = view.get("s2")
    assert cancelled is not None
    assert cancelled.estimated_time_remaining() is None


def test_the_rate_is_measured_from_the_first_event() -> None:
    view = make_view()
    feed(view, 0, progress=20)
    feed(view, 2, progress=30, metadata={"estimated_time_remaining": 99})
    feed(view, 5, progress=70)
    state = view.get("s1")
    assert state is not None
    body = state.as_dict()
    assert (body["first_progress"], body["started_at"]) == (20, NOW)
    # 50 points in 5 s: 30 more take 3 s; the figure reported in between is no longer the latest
    assert body["estimated_time_remaining"] == 3.0


def test_sessions_expire_and_the_count_is_bounded() -> None:
    view = make_view(ttl_ms=5_000, max_sessions=3)
    feed(view, 0, session="old")  # 10 s before "now": expired
    for n, name in enumerate(["a", "b", "c", "d"], start=6):
        feed(view, n, session=name)
    assert view.get("old") is None
    assert view.get("a") is None  # pushed out by the count limit
    assert [s.session_id for s in view.sessions()] == ["d", "c", "b"]
    assert len(view) == 3
    assert view.evicted == 2


def test_listing_filters_by_type_and_status() -> None:
    view = make_view()
    feed(view, 0, session="m1")
    feed(view, 1, session="c1", workflow_type="character")
    feed(view, 2, session="m2", status="completed", progress=100)
    assert [s.session_id for s in view.sessions(workflow_type="map")] == ["m2", "m1"]
    assert [s.session_id for s in view.sessions(status="running")] == ["c1", "m1"]


def test_a_heartbeat_moves_only_the_heard_entry_and_is_not_news() -> None:
    view = make_view()
    first = feed(view, 0, step="same")
    beat = ProgressEvent(session_id="s1", workflow_type="map", step="same", progress=10, ts=NOW)
    envelope = Envelope.of(f"{NOW + 1000}-0", beat)
    assert view.apply(envelope, beat) is False
    state = view.get("s1")
    assert state is not None
    assert (state.latest, state.heard) == (first, envelope)
    assert list(state.history.after(None)) == [first.key]
    assert view.apply(*_event(2, progress=20)) is True
    assert list(state.history.after(None))[-1] == StreamId(NOW + 2000, 0)


def test_a_heartbeat_applied_ahead_is_not_news_when_read_back() -> None:
    view = make_view()
    feed(view, 0, step="same")
    beat = ProgressEvent(session_id="s1", workflow_type="map", step="same", progress=10)
    envelope = Envelope.of(f"{NOW + 1000}-0", beat)
    assert view.apply(envelope, beat, ahead=True) is False
    assert view.apply(envelope, beat) is False
    changed = ProgressEvent(session_id="s1", workflow_type="map", step="same", progress=11)
    news = Envelope.of(f"{NOW + 2000}-0", changed)
    assert view.apply(news, changed, ahead=True) is True
    assert view.apply(news, changed) is True


def _event(n: int, **fields: object) -> tuple[Envelope, ProgressEvent]:
    values: dict[str, object] = {
        "session_id": "s1",
        "workflow_type": "map",
        "step": "same",
        "progress": 10,
        "ts": NOW + n * 1000,
        **fields,
    }
    event = ProgressEvent.model_validate(values)
    return Envelope.of(f"{NOW + n * 1000}-0", event), event


def test_a_replay_is_delivered_with_the_plan_that_held_for_its_entry() -> None:
    view = make_view()
    first = [{"step": "a"}, {"step": "b"}]
    second = [{"step": "b"}, {"step": "c", "weight": 3}]
    feed(view, 0, step="a", progress=50, plan=first)
    feed(view, 1, step="b", progress=50)
    feed(view, 2, step="b", progress=50, plan=second)
    event = ProgressEvent.model_validate(
        {"session_id": "s1", "workflow_type": "map", "step": "b", "progress": 50, "ts": NOW}
    )
    older, _ = view.delivered(f"{NOW + 1000}-0", event)
    newer, _ = view.delivered(f"{NOW + 2000}-0", event)
    assert older.position is not None
    assert newer.position is not None
    assert (older.position.overall, newer.position.overall) == (75.0, 12.5)
    before_any, _ = view.delivered(f"{NOW - 1000}-0", event)
    assert before_any.position is None

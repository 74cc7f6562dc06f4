"""The session view's children: the aggregate rule, orphans, bounds, liveness and routing."""

from __future__ import annotations

from relay.protocol.children import MAX_CHILDREN_LISTED
from relay.protocol.event import ProgressEvent
from relay.protocol.frames import Envelope
from relay.server.hub import Hub
from relay.server.liveness import LivenessRules
from relay.server.session_view import SessionView
from tests.server.test_owners import listener

NOW = 1_700_000_000_000
_SEQUENCE = [0]


def feed(view: SessionView, session: str, **fields: object) -> Envelope:
    _SEQUENCE[0] += 1
    at = NOW + _SEQUENCE[0]
    values: dict[str, object] = {
        "session_id": session,
        "workflow_type": "tile" if session.startswith("c") else "map",
        "step": "work",
        "progress": 0,
        "ts": at,
    }
    values.update(fields)
    event = ProgressEvent.model_validate(values)
    envelope, event = view.delivered(f"{at}-0", event)
    view.apply(envelope, event)
    return envelope


def make_view(max_sessions: int = 1000) -> SessionView:
    return SessionView(ttl_ms=3_600_000, max_sessions=max_sessions, clock=lambda: NOW + 10_000)


def state(view: SessionView, session: str) -> dict[str, object]:
    found = view.get(session)
    assert found is not None
    return found.as_dict()


def test_a_parent_without_progress_of_its_own_shows_its_childrens_weighted_mean() -> None:
    view = make_view()
    feed(view, "p")
    feed(view, "c1", parent_id="p", progress=50)
    feed(view, "c2", parent_id="p", weight=3, progress=10)
    parent = state(view, "p")
    assert parent["overall_progress"] == 20  # (50 + 3 * 10) / 4
    assert parent["progress"] == 0
    assert parent["children_count"] == 2
    assert parent["children"] == ["c2", "c1"]
    assert parent["children_progress"] == 20
    # Later events omit the parent and weight: they belong to the session.
    feed(view, "c2", progress=30)
    assert state(view, "c2")["parent_id"] == "p"
    assert state(view, "c2")["weight"] == 3
    assert state(view, "p")["overall_progress"] == 35
    feed(view, "c1", progress=50, status="completed")
    feed(view, "c2", progress=40, status="failed", error="x")
    parent = state(view, "p")
    assert parent["overall_progress"] == 55  # 100 + 3 * 40, over 4
    counts = [parent[k] for k in ("children_ongoing", "children_completed", "children_failed")]
    assert counts == [0, 1, 1]


def test_a_parent_that_reports_progress_or_a_plan_keeps_its_own_figure() -> None:
    view = make_view()
    feed(view, "p", progress=5)
    feed(view, "c1", parent_id="p", progress=90)
    assert state(view, "p")["overall_progress"] == 5
    assert state(view, "p")["children_progress"] == 90
    feed(view, "q", plan=[{"step": "work"}, {"step": "merge"}])
    feed(view, "c2", parent_id="q", progress=90)
    assert state(view, "q")["overall_progress"] == 0


def test_children_of_an_unknown_parent_attach_when_it_appears() -> None:
    view = make_view()
    child = feed(view, "c1", parent_id="p", progress=40)
    assert view.get("p") is None
    assert child.derived == {
        "parent_progress": 40,
        "parent_children_count": 1,
        "parent_children_completed": 0,
    }
    own = feed(view, "p")
    assert state(view, "p")["overall_progress"] == 40
    assert own.derived == {"overall_progress": 40, "children_count": 1, "children_completed": 0}


def test_a_cycle_of_parents_costs_nothing_and_forgotten_children_leave_the_tally() -> None:
    view = make_view(max_sessions=3)
    feed(view, "ca", parent_id="cb", progress=10)
    feed(view, "cb", parent_id="ca", progress=20)
    assert state(view, "ca")["overall_progress"] == 10  # each reported progress of its own
    assert state(view, "cb")["children_count"] == 1
    feed(view, "p")
    feed(view, "c1", parent_id="p", progress=60)  # evicts ca, the oldest
    assert state(view, "cb")["children_count"] == 0
    assert view.children("cb") is None
    assert state(view, "p")["children_count"] == 1


def test_the_listing_is_bounded_and_the_counts_are_not() -> None:
    view = make_view()
    feed(view, "p")
    for n in range(MAX_CHILDREN_LISTED + 5):
        feed(view, f"c{n}", parent_id="p", progress=100, status="completed")
    parent = state(view, "p")
    assert len(parent["children"]) == MAX_CHILDREN_LISTED  # type: ignore[arg-type]
    assert parent["children_count"] == parent["children_completed"] == MAX_CHILDREN_LISTED + 5
    assert parent["overall_progress"] == 100


def test_children_keep_a_quiet_parent_alive_and_completion_needs_each_completed() -> None:
    view = make_view()
    rules = LivenessRules(stall_after=1)
    parent_entry = feed(view, "p")
    feed(view, "c1", parent_id="p", progress=100, status="completed")
    child = feed(view, "c2", parent_id="p", progress=100)
    parent = view.get("p")
    assert parent is not None
    assert parent.overall == 100
    quiet = child.key.ms + 999
    assert parent_entry.key.ms + 1000 <= quiet
    assert rules.verdict(parent, quiet) is None  # its children were heard lately
    verdict = rules.verdict(parent, child.key.ms + 1000)
    assert verdict is not None
    assert verdict.status == "stalled"
    feed(view, "c2", progress=100, status="completed")
    verdict = rules.verdict(parent, NOW + 60_000)
    assert verdict is not None
    assert verdict.status == "completed"
    assert verdict.metadata["inferred"] is True


def child_envelope(number: int, owner: str | None, parent_type: str | None) -> Envelope:
    event = ProgressEvent(
        session_id="c1", workflow_type="tile", step="s", progress=1, parent_id="p", owner=owner
    )
    envelope = Envelope.of(f"{number}-0", event)
    envelope.parent_type = parent_type
    return envelope


def test_a_childs_events_reach_its_parents_subscriptions_once_scoped_by_the_childs_owner() -> None:
    hub = Hub()
    by_type, by_any, alice, bob, other = (listener(name)[0] for name in "tAabo")
    for subscriber in (by_type, by_any, alice, bob, other):
        hub.attach(subscriber)
    hub.subscribe(by_type, ("map", "p"))
    hub.subscribe(by_any, ("*", "p"))
    hub.subscribe(alice, ("*", "p"), owner="alice")
    hub.subscribe(bob, ("map", "p"), owner="bob")
    hub.subscribe(other, ("map", "q"))
    # The parent's type is known once it reported; before, only "*" subscriptions match.
    assert hub.route(child_envelope(1, "alice", "map")) == 3
    assert hub.route(child_envelope(2, "alice", None)) == 2
    assert hub.route(child_envelope(3, "bob", "map")) == 3
    assert hub.route(child_envelope(4, None, "map")) == 2
    hub.subscribe(by_type, ("tile", None))  # matched twice: delivered once
    assert hub.route(child_envelope(5, None, "map")) == 2

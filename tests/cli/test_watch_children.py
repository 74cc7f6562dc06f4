"""``relay watch`` shows a parent with its children count, and its bar moves with its children."""

from __future__ import annotations

from relay.cli.watch import ProgressBoard, format_event
from relay.protocol.children import family_in
from tests.cli.test_watch import Clock, rendered, reported


def row_of(board: ProgressBoard, session_id: str) -> str:
    """The board's line of one session (the type column shows before it)."""
    [line] = [line for line in rendered(board).splitlines() if f" {session_id} " in line]
    return line


def test_a_parents_row_takes_its_figures_from_its_own_and_its_childrens_events() -> None:
    board = ProgressBoard(clock=Clock())
    own = {"overall_progress": 20, "children_count": 2, "children_completed": 0}
    board.update(reported("map-1", 0, step="fan-out"), None, own)
    line = row_of(board, "map-1")
    assert "20%" in line
    assert "children 0/2 done" in line
    child = {"parent_progress": 60, "parent_children_count": 2, "parent_children_completed": 1}
    board.update(reported("tile-1", 100, workflow_type="tile", parent_id="map-1"), None, child)
    line = row_of(board, "map-1")
    assert "60%" in line
    assert "children 1/2 done" in line


def test_lines_say_a_parents_children_and_a_childs_parent() -> None:
    parent = format_event(
        reported("map-1", 0),
        None,
        {"children_count": 3, "children_completed": 1, "overall_progress": 40},
    )
    assert parent.endswith("children 1/3 done, overall 40%")
    child = format_event(reported("tile-1", 50, parent_id="map-1"), None, {"parent_progress": 40})
    assert child.endswith("parent map-1 40%")


def test_only_numbers_are_taken_from_the_gateways_fields() -> None:
    data = {"children_count": 2, "children_completed": "x", "overall_progress": True, "step": "a"}
    assert family_in(data) == {"children_count": 2}
    assert family_in({"overall_progress": 40}) == {}

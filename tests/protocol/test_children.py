"""Children: the aggregate rule and its bounds, the fields in bodies, entries and delivered data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from relay.protocol.children import (
    DEFAULT_CHILD_WEIGHT,
    MAX_CHILD_WEIGHT,
    MAX_CHILDREN_LISTED,
    SCALE,
    child_figure,
    scaled_share,
    scaled_weight,
    weighted_mean,
)
from relay.protocol.entries import EntryError, event_from_entry
from relay.protocol.event import ProgressEvent, event_from_data, parse_event_json
from relay.server.children import ChildrenTally


def body(**fields: Any) -> bytes:
    event = {"session_id": "c1", "workflow_type": "tile", "step": "render", "progress": 10}
    return orjson.dumps({**event, **fields})


@pytest.mark.parametrize(
    ("status", "overall", "figure"),
    [
        ("running", 40, 40),
        ("completed", 30, 100),
        ("failed", 30, 30),
        ("cancelled", 70, 70),
        ("stalled", 55, 55),
    ],
)
def test_a_child_counts_100_once_completed_and_where_it_stands_or_stopped_otherwise(
    status: str, overall: float, figure: float
) -> None:
    assert child_figure(status, overall) == figure


def test_the_aggregate_is_the_weighted_mean_and_never_above_100() -> None:
    assert weighted_mean(0, 0) == 0
    assert (
        weighted_mean(scaled_share(1, "completed", 0) + scaled_share(3, "running", 20), 4 * SCALE)
        == 40
    )
    assert weighted_mean(1000, 5) == 100
    assert scaled_weight(MAX_CHILD_WEIGHT) * 100 < 2**63  # sums stay small integers


def test_a_tally_replaces_each_childs_part_and_counts_by_status() -> None:
    tally = ChildrenTally()
    tally.count("a", 1, "running", 50)
    tally.count("b", 3, "running", 0)
    assert tally.progress == 12.5
    tally.count("b", 3, "completed", 10)
    assert tally.progress == 87.5
    assert (len(tally), tally.completed, tally.ongoing) == (2, 1, 1)
    tally.count("a", 1, "failed", 50)
    assert tally.ongoing == 0
    assert tally.by_status == {"completed": 1, "failed": 1}
    assert tally.ongoing_ids() == []
    tally.drop("b")
    tally.drop("unknown")
    assert (len(tally), tally.progress, tally.ids()) == (1, 50, ["a"])


def test_sums_are_exact_whatever_the_order_of_the_events() -> None:
    parts = [(f"c{i}", 0.1 * (i + 1), "running", 100 / 3 * (i % 3)) for i in range(30)]
    forward, backward = ChildrenTally(), ChildrenTally()
    for part in parts:
        forward.count(*part)
    for part in reversed(parts):
        backward.count(*part)
        backward.count(part[0], 1, "running", 0)
        backward.count(*part)
    assert forward.progress == backward.progress


def test_the_listing_names_the_latest_updated_children_first_and_is_bounded() -> None:
    tally = ChildrenTally()
    for n in range(5):
        tally.count(f"c{n}", 1, "running", 0)
    tally.count("c1", 1, "running", 50)
    assert tally.ids(3) == ["c1", "c4", "c3"]


def test_parent_and_weight_in_a_body_are_carried_everywhere() -> None:
    event = parse_event_json(body(parent_id="p1", weight=2.5))
    assert (event.parent_id, event.weight) == ("p1", 2.5)
    fields = event.stream_fields(1)
    assert (fields["parent_id"], fields["weight"]) == ("p1", "2.5")
    assert event_from_entry("tile", "1-0", fields) == event.stamped(1)
    data = event.data()
    assert (data["parent_id"], data["weight"]) == ("p1", 2.5)
    assert ProgressEvent.model_validate(data) == event
    plain = parse_event_json(body())
    assert "parent_id" not in plain.data()
    assert "weight" not in plain.stream_fields(1)


@pytest.mark.parametrize(
    "fields",
    [
        {"weight": 0},
        {"weight": -1},
        {"weight": MAX_CHILD_WEIGHT + 1},
        {"weight": "2"},
        {"parent_id": "bad id"},
        {"parent_id": "x" * 129},
        {"parent_id": 7},
    ],
)
def test_bad_parents_and_weights_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        parse_event_json(body(**fields))


def test_a_session_naming_itself_as_its_parent_has_none() -> None:
    event = parse_event_json(body(parent_id="c1"))
    assert event.parent_id is None
    fields = {"session_id": "c1", "step": "s", "progress": "1", "parent_id": "c1"}
    assert event_from_entry("tile", "1-0", fields).parent_id is None


@pytest.mark.parametrize(
    "extra",
    [
        {"weight": "nan"},
        {"weight": "inf"},
        {"weight": "0"},
        {"weight": "heavy"},
        {"weight": "1e400"},
        {"parent_id": "with space"},
        {"parent_id": ""},
        {"parent_id": "\udcff"},
    ],
)
def test_bad_entry_fields_are_a_clear_entry_error(extra: dict[str, str]) -> None:
    fields = {"session_id": "c1", "step": "s", "progress": "1", **extra}
    with pytest.raises(EntryError):
        event_from_entry("tile", "1-0", fields)


def test_the_gateways_figures_are_left_out_when_data_is_read_back() -> None:
    data = {
        **parse_event_json(body(parent_id="p1")).data(),
        "parent_progress": 40,
        "parent_children_count": 3,
        "parent_children_completed": 1,
        "children_count": 2,
        "children_completed": 0,
    }
    assert event_from_data(data).parent_id == "p1"


def test_the_protocol_page_and_readme_state_the_limits() -> None:
    root = Path(__file__).parents[2]
    page = " ".join((root / "docs" / "protocol.md").read_text(encoding="utf-8").split())
    assert f"at most {MAX_CHILDREN_LISTED} ids" in page
    weight = f"at most {MAX_CHILD_WEIGHT:,}; {DEFAULT_CHILD_WEIGHT} while never named"
    assert weight in page
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert f"at most {MAX_CHILD_WEIGHT:,} (default {DEFAULT_CHILD_WEIGHT})" in readme

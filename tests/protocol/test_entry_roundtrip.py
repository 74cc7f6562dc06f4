"""What publishers may take for granted about the entries they write.

A gateway keeps the event it published in place of decoding the entry it
reads back, when the entry holds exactly the fields it wrote (see
relay.server.own_entries): that is only sound if decoding those fields gives
the event back. Fingerprints are compared across processes and versions, so
the fast way of computing them must give what the models' own dump gives.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.protocol.entries import WRITTEN, Publication, Published, PublishPlan, event_from_entry
from relay.protocol.event import ProgressEvent
from relay.protocol.idempotency import fingerprint
from relay.protocol.keys import Keys

_json_leaf: st.SearchStrategy[object] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.text(max_size=8),
    st.floats(allow_nan=False, allow_infinity=False),
)
_json = st.recursive(
    _json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
_ids = st.from_regex(r"\A[A-Za-z0-9._:-]{1,12}\Z")
_steps = st.text(
    st.characters(min_codepoint=0xC0, max_codepoint=0x2FF) | st.sampled_from("az09_ -"),
    min_size=1,
    max_size=10,
).filter(str.strip)
_plans = st.lists(
    st.fixed_dictionaries(
        {"step": _steps}, optional={"weight": st.floats(0.5, 100, allow_nan=False)}
    ),
    min_size=1,
    max_size=3,
)


@st.composite
def events(draw: st.DrawFn) -> ProgressEvent:
    """Valid events using every field, as any edge could accept them, ``ts`` stamped."""
    body: dict[str, Any] = {
        "session_id": draw(_ids),
        "workflow_type": draw(st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,8}\Z")),
        "step": draw(_steps),
        "progress": draw(st.floats(0, 100) | st.integers(0, 100)),
        "ts": draw(st.integers(0, 2**53)),
    }
    optional = {
        "metadata": st.dictionaries(st.text(max_size=5), _json, max_size=4),
        "status": st.sampled_from(["running", "retrying", "completed", "failed", "cancelled"]),
        "error": st.text(max_size=10),
        "attempt": st.integers(1, 1000),
        "owner": _ids,
        "plan": _plans,
        "parent_id": _ids,
        "weight": st.floats(0.01, 1000, allow_nan=False) | st.integers(1, 1000),
    }
    for name, values in optional.items():
        if draw(st.booleans()):
            body[name] = draw(values)
    return ProgressEvent.model_validate(body)


@settings(max_examples=300)
@given(events())
def test_an_entry_decodes_to_the_event_that_wrote_it(event: ProgressEvent) -> None:
    fields = event.stream_fields()
    assert event_from_entry(event.workflow_type, "1-0", fields) == event


@settings(max_examples=200)
@given(st.lists(events(), min_size=1, max_size=4))
def test_fingerprints_are_those_of_the_models_dump(batch: list[ProgressEvent]) -> None:
    content = [event.model_dump(mode="json", exclude={"ts"}) for event in batch]
    dumped = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    assert fingerprint(batch) == hashlib.sha256(dumped).hexdigest()[:32]


def test_a_written_publication_carries_the_fields_of_its_entries() -> None:
    first = ProgressEvent(session_id="s1", workflow_type="map", step="a", progress=1, ts=7)
    second = first.model_copy(update={"workflow_type": "quest", "progress": 2.0})
    plan = PublishPlan(Keys(""), [Publication([first, second], "key-1")], maxlen=100)
    for number, call in enumerate(plan.calls):
        count = len(call.places)
        call.answer = [f"{number + 1}-0"] * count + [0] * count + [WRITTEN]
    (published,) = plan.results()
    assert isinstance(published, Published)
    assert published.entries == [first.stream_fields(), second.stream_fields()]


def test_a_publication_answered_from_its_record_carries_no_fields() -> None:
    event = ProgressEvent(session_id="s1", workflow_type="map", step="a", progress=1, ts=7)
    plan = PublishPlan(Keys(""), [Publication([event], "key-1")], maxlen=100)
    (call,) = plan.calls
    call.answer = ["1-0", 0, 1]
    (published,) = plan.results()
    assert isinstance(published, Published)
    assert published.replayed
    assert published.entries == [None]

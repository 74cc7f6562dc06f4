"""What each subscription of a connection already guarantees it, so no event is sent twice.

Live events reach a connection once whatever its subscriptions (the hub
routes each event to a subscriber once). Everything else a subscription sends
(a replayed history, a session's latest event, a snapshot) is checked, when
the writer reaches it in the outbox, against what the connection's other
subscriptions have delivered before that point or will deliver live after it:

- ``live``: events of the subscription above this id are routed live, behind
  the point where it was made; once its replay is placed, everything above its
  ``since`` is in the outbox before the current point or will come live.
- ``states``: for each of these ids, the latest event of each session the
  subscription matches, as of that id, was sent (a snapshot sends running
  sessions only). Subscribing again adds one: every such guarantee stays
  true, and neither implies the other.
- ``floor``: the client said it already has the subscription's events up to
  this id, so live events at or below it are not sent again.

For ``*`` a cut is a mapping per workflow type; a type missing from it was
not followed yet, so all of its events will come live.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from relay.protocol.frames import ANY_TYPE, Envelope, SubscriptionKey
from relay.protocol.stream_ids import START, STREAM_ID_PART_MAX, StreamId

# Above every stream id: a cut that claims nothing.
BEYOND = StreamId(STREAM_ID_PART_MAX + 1, 0)

Cut = StreamId
Cuts = Cut | Mapping[str, Cut]


def cut_for(cuts: Cuts, workflow_type: str) -> Cut:
    """The id of ``cuts`` that applies to events of ``workflow_type``."""
    return cuts if isinstance(cuts, StreamId) else cuts.get(workflow_type, START)


def matches(key: SubscriptionKey, envelope: Envelope) -> bool:
    """Whether the subscription ``key`` matches ``envelope``."""
    workflow_type, session_id = key
    return workflow_type in (ANY_TYPE, envelope.workflow_type) and session_id in (
        None,
        envelope.session_id,
    )


class Coverage:
    """One subscription's guarantees to its connection (see the module docstring)."""

    __slots__ = ("floor", "live", "states")

    def __init__(self, live: Cuts | None) -> None:
        # None claims nothing: nothing is ever dropped on this subscription's account.
        self.live = live
        self.states: tuple[Cuts, ...] = ()
        self.floor: Cut | None = None

    def add_state(self, state: Cuts) -> None:
        """The subscription's current state as of ``state`` has just been sent."""
        if state not in self.states:
            self.states += (state,)

    def lower(self, since: Cut, workflow_type: str) -> None:
        """The subscription's replay from ``since`` (exclusive) has just been placed."""
        if self.live is not None:
            self.live = min(cut_for(self.live, workflow_type), since)


def _covers(
    key: SubscriptionKey, coverage: Coverage, envelope: Envelope, following: Cut | None
) -> bool:
    """Whether ``coverage`` already delivers ``envelope``; ``following`` is the next id of
    the same session in the same batch, if any."""
    if not matches(key, envelope):
        return False
    wtype = envelope.workflow_type
    if coverage.live is not None and envelope.key > cut_for(coverage.live, wtype):
        return True
    if key[1] is None and envelope.terminal:
        return False  # a snapshot sends running sessions only
    for states in coverage.states:
        state = cut_for(states, wtype)
        # Within a batch complete up to ``state`` (a history read that far, or
        # the latest event of each session), the last event of a session at or
        # below the state cut was that session's latest then, and so already sent.
        if envelope.key <= state and (following is None or following > state):
            return True
    return False


def _following_ids(items: Sequence[Envelope | str]) -> list[Cut | None]:
    """For each item, the id of the next item of the same session in ``items``."""
    following: list[Cut | None] = [None] * len(items)
    seen: dict[tuple[str, str], Cut] = {}
    for index in range(len(items) - 1, -1, -1):
        item = items[index]
        if isinstance(item, Envelope):
            session = (item.workflow_type, item.session_id)
            following[index] = seen.get(session)
            seen[session] = item.key
    return following


def uncovered(
    items: list[Envelope | str], coverages: Mapping[SubscriptionKey, Coverage]
) -> list[Envelope | str]:
    """``items`` without the events another guarantee in ``coverages`` already delivers."""
    relevant = [
        (key, coverage)
        for key, coverage in coverages.items()
        if coverage.live is not None or coverage.states
    ]
    if not relevant:
        return items
    following: list[Cut | None] | None = None
    if any(coverage.states for _, coverage in relevant):
        following = _following_ids(items)
    kept: list[Envelope | str] = []
    for index, item in enumerate(items):
        if isinstance(item, Envelope):
            after = following[index] if following is not None else None
            if any(_covers(key, coverage, item, after) for key, coverage in relevant):
                continue
        kept.append(item)
    return kept


def below_floors(coverages: Mapping[SubscriptionKey, Coverage], envelope: Envelope) -> bool:
    """True when every subscription matching ``envelope`` has a floor at or above it."""
    matched = False
    for key, coverage in coverages.items():
        if matches(key, envelope):
            floor = coverage.floor
            if floor is None or envelope.key > floor:
                return False
            matched = True
    return matched

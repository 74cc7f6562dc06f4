"""The stream ids of a session's latest events, kept compactly for its history."""

from __future__ import annotations

from array import array
from collections.abc import Iterator

from relay.protocol.stream_ids import StreamId

# Ids remembered per session unless configured otherwise (RELAY_SESSION_HISTORY).
DEFAULT_HISTORY_LIMIT = 100


class RecentIds:
    """The last ``limit`` stream ids remembered, oldest first.

    Ids are stored as unsigned 64-bit pairs in one array used as a ring: 16
    bytes an id, no object per id, and nothing to shift when the oldest goes.
    """

    __slots__ = ("_limit", "_parts", "_start")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._parts = array("Q")  # ms, seq, ms, seq, ...
        self._start = 0  # where the oldest id is, once the ring is full

    def __len__(self) -> int:
        return len(self._parts) // 2

    def __iter__(self) -> Iterator[StreamId]:
        parts, count = self._parts, len(self)
        for offset in range(count):
            at = 2 * ((self._start + offset) % count)
            yield StreamId(parts[at], parts[at + 1])

    def add(self, key: StreamId) -> None:
        """Remember one more id.

        Ids of one stream only grow: an id seen before (the stream read again)
        is ignored, and an older unknown one means the stream was rewritten,
        so the ids remembered so far name nothing any more.
        """
        parts = self._parts
        count = len(parts) // 2
        if count:
            # The newest id, compared as a bare pair: this runs once per event.
            at = 2 * ((self._start - 1) % count)
            if key <= (parts[at], parts[at + 1]):
                if key in self:
                    return
                self.clear()
                parts = self._parts
        if len(parts) < 2 * self._limit:
            parts.extend(key)
            return
        at = 2 * self._start
        parts[at], parts[at + 1] = key
        self._start = (self._start + 1) % self._limit

    def clear(self) -> None:
        """Forget every id."""
        self._parts = array("Q")
        self._start = 0

    def after(self, key: StreamId | None) -> Iterator[StreamId]:
        """The remembered ids greater than ``key`` (all of them for None), oldest first."""
        return iter(self) if key is None else (found for found in self if found > key)

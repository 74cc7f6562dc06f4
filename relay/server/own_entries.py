"""The entries this gateway wrote itself, remembered until its reader reads them back.

The gateway that publishes an event has validated it already, and the reader
would validate it again when the entry comes back from its stream. Instead,
the publisher remembers each entry's fields as it wrote them with the event
they encode, and the reader takes the event from here when the entry it read
holds exactly those fields. An entry is bytes anyone could have written, so
nothing in it is believed: only a field-for-field match with what this
process wrote itself, in the same stream at the same id, skips decoding,
and since an entry's event is decoded from its fields alone, the event is
the one decoding would give. Anything else (another writer's entry, an id
Redis gave again after losing its history, a field changed) is decoded and
validated as any entry is.
"""

from __future__ import annotations

from relay.protocol.event import ProgressEvent

# Entries remembered at most: the reader reads them back within milliseconds,
# so only those trimmed or lost before it did can linger, and the oldest go first.
MAX_OWN_ENTRIES = 10_000


class OwnEntries:
    """Entries written by this process, by workflow type and entry id, each with its event."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        # Insertion ordered, so the oldest are dropped first.
        self._entries: dict[tuple[str, str], tuple[dict[str, str], ProgressEvent]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def wrote(
        self, workflow_type: str, entry_id: str, fields: dict[str, str], event: ProgressEvent
    ) -> None:
        """Remember that entry ``entry_id`` of the type's stream holds ``fields``, for ``event``."""
        entries = self._entries
        entries[workflow_type, entry_id] = (fields, event)
        if len(entries) > MAX_OWN_ENTRIES:
            del entries[next(iter(entries))]

    def read_back(
        self, workflow_type: str, entry_id: str, fields: dict[str, str]
    ) -> ProgressEvent | None:
        """The event of an entry read back, if it holds exactly what was written; forgets it."""
        known = self._entries.pop((workflow_type, entry_id), None)
        if known is None or known[0] != fields:
            return None
        return known[1]

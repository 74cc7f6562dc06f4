"""Turning stream entries into events: validate, encode once, update the view, route."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from relay.protocol.entries import EntryError, StreamEntry, event_from_entry
from relay.protocol.event import ProgressEvent
from relay.protocol.frames import Envelope, reset_frame
from relay.protocol.keys import Keys
from relay.server.hub import Hub
from relay.server.own_entries import OwnEntries
from relay.server.session_view import SessionView

logger = logging.getLogger(__name__)


def decode(
    workflow_type: str,
    entries: list[StreamEntry],
    view: SessionView,
    on_invalid: Callable[[EntryError], None] | None = None,
    own: OwnEntries | None = None,
) -> Iterator[tuple[Envelope, ProgressEvent]]:
    """Valid entries as delivered (see :meth:`SessionView.delivered`); invalid ones are skipped.

    Only the reader passes ``on_invalid``, so an entry is counted and logged
    once, when first read, not again by every replay or history request; and
    ``own``, the entries this gateway wrote, whose events it knows already.
    Each entry is taken as delivered when it is reached, so the reader, which
    applies one before asking for the next, gets each as of the ones before it.
    """
    delivered = view.delivered
    for entry_id, fields in entries:
        event = None if own is None else own.read_back(workflow_type, entry_id, fields)
        if event is None:
            try:
                event = event_from_entry(workflow_type, entry_id, fields)
            except EntryError as exc:
                if on_invalid is not None:
                    on_invalid(exc)
                continue
        yield delivered(entry_id, event)


class Ingest:
    """The reader's handler: valid entries update the view; live news is routed (no heartbeats)."""

    def __init__(self, keys: Keys, hub: Hub, view: SessionView) -> None:
        self._keys = keys
        self._hub = hub
        self._view = view
        self.accepted_by_type: dict[str, int] = {}
        self.invalid = 0

    def _skipped(self, exc: EntryError) -> None:
        self.invalid += 1
        logger.warning("skipping invalid stream entry: %s", exc)

    def forget(self, stream_key: str) -> None:
        """Drop the sessions of the stream's type: its history is about to be read again."""
        workflow_type = self._keys.workflow_type(stream_key)
        if workflow_type is not None:
            self._view.forget_type(workflow_type)

    def reset(self, stream_key: str, epoch: str) -> None:
        """Tell every subscriber of the stream's type that its history was reset."""
        workflow_type = self._keys.workflow_type(stream_key)
        if workflow_type is not None:
            told = self._hub.broadcast(workflow_type, reset_frame(workflow_type, epoch))
            logger.info("told %d subscriber(s) of %s that its history was reset", told, stream_key)

    def __call__(self, stream_key: str, entries: list[StreamEntry], live: bool) -> None:
        workflow_type = self._keys.workflow_type(stream_key)
        if workflow_type is None:
            return
        apply, route = self._view.apply, self._hub.route
        accepted = 0
        view = self._view
        for envelope, event in decode(workflow_type, entries, view, self._skipped, view.own):
            accepted += 1
            # A heartbeat only refreshes the session's liveness: nobody is told of it.
            if apply(envelope, event) and live:
                route(envelope)
        counts = self.accepted_by_type
        counts[workflow_type] = counts.get(workflow_type, 0) + accepted

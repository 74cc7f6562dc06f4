"""Turning stream entries into routed events: validate, encode once, route."""

from __future__ import annotations

import logging

from relay.hub import Hub
from relay.keys import Keys
from relay.models import EntryError, Envelope, event_from_entry
from relay.streams import StreamEntry

logger = logging.getLogger(__name__)


class Ingest:
    """The reader's handler: every valid entry is routed, every invalid one counted."""

    def __init__(self, keys: Keys, hub: Hub) -> None:
        self._keys = keys
        self._hub = hub
        self.accepted = 0
        self.invalid = 0

    def __call__(self, stream_key: str, entries: list[StreamEntry]) -> None:
        workflow_type = self._keys.workflow_type(stream_key)
        if workflow_type is None:
            return
        route = self._hub.route
        for entry_id, fields in entries:
            try:
                event = event_from_entry(workflow_type, entry_id, fields)
            except EntryError as exc:
                self.invalid += 1
                logger.warning("skipping invalid stream entry: %s", exc)
                continue
            self.accepted += 1
            route(Envelope.of(entry_id, event))

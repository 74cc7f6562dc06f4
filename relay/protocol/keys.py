"""Every Redis key name relay uses, in one place."""

from __future__ import annotations

EVENT_PREFIX = "workflow:progress:"


def event_name(workflow_type: str) -> str:
    """The name subscribers see for events of one workflow type."""
    return EVENT_PREFIX + workflow_type


class Keys:
    """Key names under one configurable prefix (empty by default)."""

    __slots__ = ("_stream_prefix", "prefix")

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self._stream_prefix = prefix + EVENT_PREFIX

    def stream(self, workflow_type: str) -> str:
        """The stream holding every event of ``workflow_type``."""
        return self._stream_prefix + workflow_type

    @property
    def stream_pattern(self) -> str:
        """A SCAN pattern matching every type stream."""
        return self._stream_prefix + "*"

    @property
    def types(self) -> str:
        """The set of workflow types publishers have announced."""
        return self.prefix + "workflow:types"

    @property
    def announcements(self) -> str:
        """A short stream where publishers note new types, so readers follow them at once."""
        return self.prefix + "workflow:announcements"

    def epoch(self, stream_key: str) -> str:
        """The epoch of one stream: changes whenever its history was lost or rewritten.

        The stream key in braces is a hash tag, so the epoch lives in the
        stream's cluster slot; the name does not match :attr:`stream_pattern`.
        """
        return f"{self.prefix}{{{stream_key}}}:epoch"

    def liveness(self, stream_key: str, session_id: str, entry_id: str) -> str:
        """Present once a gateway has decided what the silence after ``entry_id`` means.

        Named by the session's latest entry, which every gateway's view agrees
        on, so the gateways that reach the same decision compete for one key.
        The stream key in braces keeps it in the stream's cluster slot.
        """
        return f"{self.prefix}{{{stream_key}}}:liveness:{session_id}:{entry_id}"

    @property
    def ready_probe(self) -> str:
        """A short-lived key readiness checks write, to learn whether the store accepts writes."""
        return self.prefix + "workflow:ready-probe"

    def cancel(self, session_id: str) -> str:
        """Present while a cancellation of ``session_id`` is pending."""
        return f"{self.prefix}workflow:cancel:{session_id}"

    def idempotency(self, key: str) -> str:
        """The record of the publication a client named ``key``: its fingerprint and ids.

        One publication may span several type streams, so the record cannot
        share a hash slot with all of them; it is named by the key alone.
        """
        return f"{self.prefix}workflow:idempotency:{key}"

    def workflow_type(self, stream_key: str) -> str | None:
        """The workflow type a stream key belongs to, or None for a foreign key."""
        if not stream_key.startswith(self._stream_prefix):
            return None
        return stream_key[len(self._stream_prefix) :] or None

"""Every Redis key name relay uses, in one place."""

from __future__ import annotations

EVENT_PREFIX = "workflow:progress:"


def event_name(workflow_type: str) -> str:
    """The name subscribers see for events of one workflow type."""
    return EVENT_PREFIX + workflow_type


def check_prefix(prefix: str) -> str:
    """``prefix`` if its braces leave every stream's companions in the stream's cluster slot.

    Companion keys carry their stream's key in braces as a hash tag. A prefix
    with one ``{tag}`` of its own (``{app}:``) is fine: its tag comes first in
    every key, so every key then hashes by it, all in one slot. Any other
    brace would make Redis Cluster hash companions apart from their stream,
    so it is refused with a ValueError saying why.
    """
    opening, closing = prefix.count("{"), prefix.count("}")
    if not opening and not closing:
        return prefix
    if opening != closing:
        raise ValueError(f"prefix {prefix!r}: unbalanced braces")
    if opening > 1:
        raise ValueError(f"prefix {prefix!r}: at most one {{tag}} is allowed")
    start, end = prefix.index("{"), prefix.index("}")
    if end < start:
        raise ValueError(f"prefix {prefix!r}: '}}' before '{{'")
    if end == start + 1:
        raise ValueError(f"prefix {prefix!r}: an empty {{}} is not a hash tag")
    return prefix


class Keys:
    """Key names under one configurable prefix (empty by default).

    A stream's companions (pending cancels, idempotency records, epoch,
    liveness markers) name the whole stream key in braces, a Redis Cluster
    hash tag, so they share the stream's slot and one script can touch them
    all. Raises ValueError for a prefix :func:`check_prefix` refuses.
    """

    __slots__ = ("_stream_prefix", "prefix")

    def __init__(self, prefix: str = "") -> None:
        self.prefix = check_prefix(prefix)
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

    def cancel(self, stream_key: str, session_id: str) -> str:
        """Present while a cancellation of ``session_id`` (of the stream ``stream_key``) is pending.

        In the stream's cluster slot, so the publish script sets, clears and
        reads it in the same call that writes the session's events.
        """
        return f"{self.prefix}workflow:cancel:{{{stream_key}}}:{session_id}"

    def idempotency(self, stream_key: str, key: str) -> str:
        """The record of what the publication a client named ``key`` wrote to ``stream_key``.

        A publication spanning several type streams has one record per
        stream, each in its stream's slot: its fingerprint and the ids of its
        events of that type.
        """
        return f"{self.prefix}workflow:idempotency:{{{stream_key}}}:{key}"

    def workflow_type(self, stream_key: str) -> str | None:
        """The workflow type a stream key belongs to, or None for a foreign key."""
        if not stream_key.startswith(self._stream_prefix):
            return None
        return stream_key[len(self._stream_prefix) :] or None

"""Events in the streams: the publish script, its arguments and answers, and entries read back."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from itertools import chain
from typing import Any

import orjson
from pydantic import ValidationError

from relay.protocol.event import ProgressEvent
from relay.protocol.idempotency import DEFAULT_IDEMPOTENCY_TTL, KeyReused, fingerprint
from relay.protocol.keys import Keys
from relay.protocol.stream_ids import StreamId

# Publish limits the HTTP reporter also needs to know, so they are named here once.
DEFAULT_MAX_BODY_BYTES = 1_048_576


DEFAULT_MAX_BATCH = 1_000


StreamEntry = tuple[str, dict[str, str]]


DEFAULT_CANCEL_TTL = 86_400


PUBLISH_BATCH = 1_000


# What the publish script answers for each publication (see the script).
WRITTEN, REPLAYED, REUSED = 0, 1, 2  # and 3: no record, answered to a lookup only


@dataclass(frozen=True, slots=True)
class Receipt:
    """What publishing one event answered: its stream id, and whether a cancel is pending."""

    id: str
    cancel_requested: bool


@dataclass(frozen=True, slots=True)
class Publication:
    """Events published together, and the idempotency key naming them, if any."""

    events: Sequence[ProgressEvent]
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Published:
    """A publication's receipts; ``replayed`` when its key had been used for it already.

    ``entries`` holds, per receipt, the fields of the entry this publication
    wrote (None for an event answered from a record); empty when not known.
    """

    receipts: list[Receipt]
    replayed: bool = False
    entries: list[dict[str, str] | None] = field(default_factory=list)


def now_ms() -> int:
    """Milliseconds since the epoch, the unit of every ``ts``."""
    return time.time_ns() // 1_000_000


# Every publisher runs this one script (see the file for what it does), so an
# entry has the same shape whoever wrote it, and a type's events are written atomically.
PUBLISH_SCRIPT = (files("relay.protocol") / "publish.lua").read_text(encoding="utf-8")
PUBLISH_SHA = hashlib.sha1(PUBLISH_SCRIPT.encode("utf-8")).hexdigest()


ANNOUNCEMENTS_MAXLEN = 100


def cancel_action(event: ProgressEvent) -> str:
    """What writing ``event`` does to its session's pending-cancel flag: "set", "del" or ""."""
    if event.status == "cancel_requested":
        return "set"
    return "del" if event.terminal else ""


@dataclass(slots=True)
class TypeCall:
    """One call of :data:`PUBLISH_SCRIPT`: the events of one workflow type, every key declared."""

    workflow_type: str
    keys: list[str]
    args: list[int | str | bytes]
    # Where each event of the call sits: (publication index, index in its publication).
    places: list[tuple[int, int]]
    # The publications the call covers, in order: (publication index, its events here).
    members: list[tuple[int, int]]
    # Each event's entry fields, in the order of ``places`` (none for a lookup).
    fields: list[dict[str, str]]
    answer: list[Any] | None = None

    def command(self) -> tuple[int | str | bytes, ...]:
        """The ``EVALSHA`` command of this call, routed by its first key on a cluster."""
        return ("EVALSHA", PUBLISH_SHA, len(self.keys), *self.keys, *self.args)


class PublishPlan:
    """The script calls that publish ``publications``: one per workflow type, and their answers.

    The gateway's HTTP path and the Python reporters (sync and async) all use
    it, so an entry has the same shape whoever wrote it. Besides the XADDs
    each call keeps its sessions' pending-cancel flags: set by a
    ``cancel_requested`` event, cleared by a terminal one, and read back for
    every event so the publisher learns of a cancellation from its next
    report. A keyed publication is recorded once per type it spans, and
    written to a type only if that type has no record of it yet (see
    :mod:`relay.protocol.idempotency`); with ``lookup_only`` nothing is
    written at all. A call answers once; calls that failed are
    :meth:`pending` again, so a retry writes only what is missing.
    """

    def __init__(
        self,
        keys: Keys,
        publications: Sequence[Publication],
        maxlen: int,
        cancel_ttl: int = DEFAULT_CANCEL_TTL,
        idempotency_ttl: int = DEFAULT_IDEMPOTENCY_TTL,
        *,
        lookup_only: bool = False,
    ) -> None:
        self.publications = list(publications)
        self.lookup_only = lookup_only
        by_type: dict[str, list[tuple[int, int]]] = {}
        for p, publication in enumerate(self.publications):
            for e, event in enumerate(publication.events):
                by_type.setdefault(event.workflow_type, []).append((p, e))
        # One publication without a key is the common case: the script then
        # looks nothing up, and no fingerprint is computed.
        self._listed = lookup_only or len(self.publications) != 1 or publications[0].key is not None
        self._fingerprints = {
            p: fingerprint(publication.events)
            for p, publication in enumerate(self.publications)
            if publication.key is not None
        }
        head: list[int | str | bytes] = [maxlen, cancel_ttl, idempotency_ttl]
        head.append("1" if lookup_only else "")
        stamp = now_ms()
        self.calls = [
            self._call(keys, workflow_type, places, head, stamp)
            for workflow_type, places in by_type.items()
        ]

    @property
    def types(self) -> list[str]:
        """The workflow types the publications span."""
        return [call.workflow_type for call in self.calls]

    def _call(
        self,
        keys: Keys,
        workflow_type: str,
        places: list[tuple[int, int]],
        head: list[int | str | bytes],
        stamp: int,
    ) -> TypeCall:
        stream = keys.stream(workflow_type)
        # Each session's pending-cancel flag, by session id, and its place in KEYS.
        cancels: dict[str, tuple[str, int]] = {}
        events = []
        members: list[tuple[int, int]] = []
        written: list[dict[str, str]] = []
        publications = self.publications
        lookup_only = self.lookup_only
        for p, e in places:
            event = publications[p].events[e]
            session_id = event.session_id
            cancel = cancels.get(session_id)
            if cancel is None:
                # KEYS[1] is the stream; Lua counts from 1.
                cancel = cancels[session_id] = (keys.cancel(stream, session_id), len(cancels) + 2)
            if lookup_only:
                flat: list[str] = []
            else:
                fields = event.stream_fields(stamp)
                written.append(fields)
                flat = [*chain.from_iterable(fields.items())]
            events.append((cancel[1], cancel_action(event), flat))
            if members and members[-1][0] == p:
                members[-1] = (p, members[-1][1] + 1)
            else:
                members.append((p, 1))
        call_keys = [stream, *(key for key, _ in cancels.values())]
        listed = []
        for p, n in members:
            key = self.publications[p].key
            if key is None:
                listed.append((n, 0, ""))
                continue
            call_keys.append(keys.idempotency(stream, key))
            listed.append((n, len(call_keys), self._fingerprints[p]))
        args = [*head, orjson.dumps(events), orjson.dumps(listed) if self._listed else ""]
        return TypeCall(workflow_type, call_keys, args, places, members, written)

    def pending(self) -> list[TypeCall]:
        """The calls not answered yet."""
        return [call for call in self.calls if call.answer is None]

    def _outcomes(self) -> list[_Outcome]:
        """Each publication's outcome per type it spans, its receipts and entries in order."""
        found = [_Outcome(len(publication.events)) for publication in self.publications]
        for call in self.calls:
            if call.answer is None:
                raise RuntimeError(f"the call for {call.workflow_type!r} has no answer")
            count = len(call.places)
            ids, flags, outcomes = (
                call.answer[:count],
                call.answer[count : 2 * count],
                call.answer[2 * count :],
            )
            # With no publications listed, the script answers one outcome for the lot.
            by_publication = {
                p: int(outcomes[index]) if index < len(outcomes) else WRITTEN
                for index, (p, _) in enumerate(call.members)
            }
            for p, outcome in by_publication.items():
                found[p].outcomes.append(outcome)
            for place, ((p, e), entry_id, flag) in enumerate(
                zip(call.places, ids, flags, strict=True)
            ):
                found[p].receipts[e] = Receipt(str(entry_id), bool(flag))
                if call.fields and by_publication[p] == WRITTEN:
                    found[p].entries[e] = call.fields[place]
        return found

    def results(self) -> list[Published | KeyReused]:
        """What each publication was answered, in order, once every call answered.

        A publication whose key was used for other events, in any type it
        spans, is answered with :class:`~relay.protocol.idempotency.KeyReused`;
        one every type answered from its record is ``replayed``.
        """
        answers: list[Published | KeyReused] = []
        for publication, found in zip(self.publications, self._outcomes(), strict=True):
            if REUSED in found.outcomes:
                answers.append(KeyReused(publication.key or ""))
                continue
            replayed = _all_replayed(found.outcomes)
            answers.append(Published(found.receipts_made(), replayed, found.entries))
        return answers

    def recorded(self) -> Published | None:
        """What a lookup of one keyed publication answered: its first answer, or None.

        None unless every type it spans has its record (a publication that
        failed in some type is written there by its retry). Raises
        :class:`~relay.protocol.idempotency.KeyReused` when the key was used
        for other events.
        """
        (found,) = self._outcomes()
        if REUSED in found.outcomes:
            raise KeyReused(self.publications[0].key or "")
        if _all_replayed(found.outcomes):
            return Published(found.receipts_made(), replayed=True)
        return None


class _Outcome:
    """What the calls answered for one publication, gathered over the types it spans."""

    __slots__ = ("entries", "outcomes", "receipts")

    def __init__(self, count: int) -> None:
        self.outcomes: list[int] = []
        self.receipts: list[Receipt | None] = [None] * count
        self.entries: list[dict[str, str] | None] = [None] * count

    def receipts_made(self) -> list[Receipt]:
        return [r for r in self.receipts if r is not None]


def _all_replayed(outcomes: list[int]) -> bool:
    # A publication of no events was not written before: nothing answered it from a record.
    return bool(outcomes) and all(outcome == REPLAYED for outcome in outcomes)


class EntryError(ValueError):
    """A stream entry that is not a valid event."""


_ENTRY_FIELDS = frozenset(
    {
        "session_id",
        "step",
        "progress",
        "metadata",
        "status",
        "error",
        "attempt",
        "ts",
        "owner",
        "plan",
        "parent_id",
        "weight",
    }
)


def _utf8(text: str) -> bool:
    """False for a string holding bytes that were not UTF-8 (kept as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_field(name: str, text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"field {name!r} is not JSON ({exc})") from None


def event_from_entry(workflow_type: str, entry_id: str, fields: dict[str, str]) -> ProgressEvent:
    """Read an event back from a stream entry written by any publisher.

    Raw ``XADD`` entries carry strings only, so numbers, metadata and the
    plan (JSON text) are parsed here; an entry with no ``ts`` takes the time from its stream id.
    """
    for name, value in fields.items():
        # isascii() is a flag check, so valid ASCII entries cost next to nothing.
        if not (name.isascii() and value.isascii()) and not (_utf8(name) and _utf8(value)):
            raise EntryError(f"entry {entry_id} of {workflow_type!r}: field {name!r} is not UTF-8")
    # Unknown fields are ignored and the key names the type: workers in other
    # languages may add fields of their own without losing their events.
    raw: dict[str, Any] = {k: v for k, v in fields.items() if k in _ENTRY_FIELDS}
    raw["workflow_type"] = workflow_type
    try:
        for name in ("progress", "weight"):
            if name in raw:
                raw[name] = float(raw[name])
        for name in ("metadata", "plan"):
            if name in raw:
                raw[name] = _json_field(name, raw[name])
        if "attempt" in raw:
            raw["attempt"] = int(raw["attempt"])
        raw["ts"] = int(raw["ts"]) if "ts" in raw else StreamId.from_redis(entry_id).ms
    except (ValueError, TypeError) as exc:
        raise EntryError(f"entry {entry_id} of {workflow_type!r}: {exc}") from None
    try:
        return ProgressEvent.model_validate(raw)
    except ValidationError as exc:
        fields_named = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors())
        raise EntryError(f"entry {entry_id} of {workflow_type!r}: bad {fields_named}") from None

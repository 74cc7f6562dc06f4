"""Events in the streams: the publish script, its arguments and answers, and entries read back."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
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
    """A publication's receipts; ``replayed`` when its key had been used for it already."""

    receipts: list[Receipt]
    replayed: bool = False


def now_ms() -> int:
    """Milliseconds since the epoch, the unit of every ``ts``."""
    return time.time_ns() // 1_000_000


# Every publisher runs this one script (see the file for what it does), so an
# entry has the same shape whoever wrote it, and a batch is written atomically.
PUBLISH_SCRIPT = (files("relay.protocol") / "publish.lua").read_text(encoding="utf-8")


ANNOUNCEMENTS_MAXLEN = 100


def cancel_action(event: ProgressEvent) -> str:
    """What writing ``event`` does to its session's pending-cancel flag: "set", "del" or ""."""
    if event.status == "cancel_requested":
        return "set"
    return "del" if event.terminal else ""


def publish_args(
    keys: Keys,
    publications: Sequence[Publication],
    maxlen: int,
    cancel_ttl: int = DEFAULT_CANCEL_TTL,
    idempotency_ttl: int = DEFAULT_IDEMPOTENCY_TTL,
    *,
    lookup_only: bool = False,
) -> list[int | str | bytes]:
    """The arguments of :data:`PUBLISH_SCRIPT` that publish ``publications``.

    The gateway's HTTP path and the Python reporters (sync and async) all call
    this, so an entry has the same shape whoever wrote it. Besides the XADDs
    the script keeps each session's pending-cancel flag: set by a
    ``cancel_requested`` event, cleared by a terminal one, and read back for
    every event so the publisher learns of a cancellation from its next
    report. A publication with a key is written only if the key has no
    record yet (see :mod:`relay.protocol.idempotency`); with ``lookup_only`` nothing is
    written at all. Hand the script's answer to :func:`receipts`.
    """
    stamp = now_ms()
    batch = []
    for publication in publications:
        for event in publication.events:
            fields = event.stream_fields(stamp)
            batch.append(
                (
                    keys.stream(event.workflow_type),
                    keys.cancel(event.session_id),
                    cancel_action(event),
                    [item for pair in fields.items() for item in pair],
                )
            )
    types = sorted({event.workflow_type for p in publications for event in p.events})
    return [
        maxlen,
        cancel_ttl,
        keys.types,
        keys.announcements,
        ANNOUNCEMENTS_MAXLEN,
        orjson.dumps(batch),
        orjson.dumps(types),
        idempotency_ttl,
        _publication_args(keys, publications, lookup_only),
        "1" if lookup_only else "",
    ]


def _publication_args(
    keys: Keys, publications: Sequence[Publication], lookup_only: bool
) -> bytes | str:
    # One publication without a key is the common case: the script then
    # looks nothing up, and no fingerprint is computed.
    if len(publications) == 1 and publications[0].key is None and not lookup_only:
        return ""
    return orjson.dumps(
        [
            (
                len(p.events),
                keys.idempotency(p.key) if p.key is not None else "",
                fingerprint(p.events) if p.key is not None else "",
            )
            for p in publications
        ]
    )


def receipts(
    answer: Sequence[Any], publications: Sequence[Publication]
) -> list[Published | KeyReused]:
    """What :data:`PUBLISH_SCRIPT` answered for each publication it was to write, in order.

    A publication whose key was used for other events is answered with
    :class:`~relay.protocol.idempotency.KeyReused`.
    """
    return [
        KeyReused(publication.key or "")
        if outcome == REUSED
        else Published(found, replayed=outcome == REPLAYED)
        for publication, (outcome, found) in zip(
            publications, _outcomes(answer, publications), strict=True
        )
    ]


def recorded_answer(answer: Sequence[Any], publication: Publication) -> Published | None:
    """What a lookup of one keyed publication answered: its first answer, or None if unknown.

    Raises :class:`~relay.protocol.idempotency.KeyReused` when the key was used
    for other events.
    """
    ((outcome, found),) = _outcomes(answer, [publication])
    if outcome == REUSED:
        raise KeyReused(publication.key or "")
    return Published(found, replayed=True) if outcome == REPLAYED else None


def _outcomes(
    answer: Sequence[Any], publications: Sequence[Publication]
) -> list[tuple[int, list[Receipt]]]:
    count = sum(len(p.events) for p in publications)
    ids, flags, outcomes = answer[:count], answer[count : 2 * count], answer[2 * count :]
    results = []
    start = 0
    for index, publication in enumerate(publications):
        end = start + len(publication.events)
        # With no publications listed, the script answers one outcome for the lot.
        outcome = int(outcomes[index]) if index < len(outcomes) else WRITTEN
        found = [
            Receipt(str(entry_id), bool(flag))
            for entry_id, flag in zip(ids[start:end], flags[start:end], strict=True)
        ]
        results.append((outcome, found))
        start = end
    return results


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

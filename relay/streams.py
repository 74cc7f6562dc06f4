"""Redis stream operations: the one publish path, stream ids, discovery and history."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from relay.batching import Batcher
from relay.idempotency import DEFAULT_IDEMPOTENCY_TTL, KeyReused, fingerprint
from relay.keys import Keys
from relay.models import NO_ID, ProgressEvent, parse_stream_id

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
PUBLISH_SCRIPT = (files("relay") / "publish.lua").read_text(encoding="utf-8")
ANNOUNCEMENTS_MAXLEN = 100


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
    record yet (see :mod:`relay.idempotency`); with ``lookup_only`` nothing is
    written at all. Hand the script's answer to :func:`receipts`.
    """
    stamp = now_ms()
    batch = []
    for publication in publications:
        for event in publication.events:
            fields = event.stream_fields(stamp)
            if event.status == "cancel_requested":
                action = "set"
            elif event.terminal:
                action = "del"
            else:
                action = ""
            batch.append(
                (
                    keys.stream(event.workflow_type),
                    keys.cancel(event.session_id),
                    action,
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
    :class:`~relay.idempotency.KeyReused`.
    """
    return [
        KeyReused(publication.key or "")
        if outcome == REUSED
        else Published(found, replayed=outcome == REPLAYED)
        for publication, (outcome, found) in zip(
            publications, _outcomes(answer, publications), strict=True
        )
    ]


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


def _size(publication: Publication) -> int:
    return len(publication.events)


class StreamStore:
    """Publishing and reading the type streams over an asyncio Redis client."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        maxlen: int,
        cancel_ttl: int = DEFAULT_CANCEL_TTL,
        idempotency_ttl: int = DEFAULT_IDEMPOTENCY_TTL,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.maxlen = maxlen
        self.cancel_ttl = cancel_ttl
        self.idempotency_ttl = idempotency_ttl
        self._publish_script = redis.register_script(PUBLISH_SCRIPT)
        self._batcher: Batcher[Publication, Published] = Batcher(
            self.write, max_batch=PUBLISH_BATCH, size=_size
        )

    async def publish(
        self, events: Sequence[ProgressEvent], *, key: str | None = None
    ) -> list[Receipt]:
        """Write ``events`` atomically and return their receipts (see :meth:`submit`)."""
        return (await self.submit(Publication(events, key))).receipts

    async def submit(self, publication: Publication) -> Published:
        """Write a publication atomically and return its receipts.

        Concurrent calls share one script call (see :mod:`relay.batching`), so
        each call's events are written together, with others' or on their own.
        Raises :class:`~relay.idempotency.KeyReused` when its key was used for
        other events.
        """
        if not publication.events:
            return Published([])
        return await self._batcher.submit(publication)

    async def write(self, publications: list[Publication]) -> list[Published | KeyReused]:
        """Write ``publications`` in one script call now, without waiting for others to join."""
        answer = await self._publish_script(keys=[], args=self._args(publications))
        return receipts(answer, publications)

    async def recorded(self, publication: Publication) -> Published | None:
        """The answer a keyed publication was first given, if it is on record; writes nothing.

        Raises :class:`~relay.idempotency.KeyReused` when the key was used for
        other events.
        """
        args = self._args([publication], lookup_only=True)
        answer = await self._publish_script(keys=[], args=args)
        ((outcome, found),) = _outcomes(answer, [publication])
        if outcome == REUSED:
            raise KeyReused(publication.key or "")
        return Published(found, replayed=True) if outcome == REPLAYED else None

    def _args(
        self, publications: list[Publication], *, lookup_only: bool = False
    ) -> list[int | str | bytes]:
        return publish_args(
            self.keys,
            publications,
            self.maxlen,
            self.cancel_ttl,
            self.idempotency_ttl,
            lookup_only=lookup_only,
        )

    async def server_id(self) -> str:
        """The Redis server's run id, which changes whenever it restarts."""
        try:
            info: dict[str, Any] = await self.redis.info("server")
        except ResponseError:
            return ""  # the embedded store has no INFO, and never restarts
        return str(info.get("run_id", ""))

    async def discover(self) -> set[str]:
        """Every type stream key: announced by publishers or created by raw XADD."""
        announced = await self.redis.smembers(self.keys.types)
        found = {self.keys.stream(str(t)) for t in announced}
        async for key in self.redis.scan_iter(
            match=self.keys.stream_pattern, count=1000, _type="stream"
        ):
            found.add(str(key))
        return {key for key in found if self.keys.workflow_type(key)}

    async def scan_step(self, cursor: int, count: int) -> tuple[int, list[str]]:
        """One SCAN call for type streams: the next cursor (0 after a full pass) and the keys found.

        Continuing the cursor tick after tick makes every call cost the same,
        however many keys Redis holds.
        """
        next_cursor, keys = await self.redis.scan(
            cursor, match=self.keys.stream_pattern, count=count, _type="stream"
        )
        return int(next_cursor), [str(key) for key in keys]

    async def probe_write(self, ttl_ms: int) -> None:
        """Write a tiny short-lived key: raises when the store does not accept writes."""
        await self.redis.set(self.keys.ready_probe, "1", px=ttl_ms)

    async def last_ids(self, stream_keys: Sequence[str]) -> dict[str, str]:
        """The newest entry id of each stream, ``0-0`` for a stream that does not exist."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in stream_keys:
                pipe.xrevrange(key, count=1)
            results = await pipe.execute()
        return {
            key: (str(entries[0][0]) if entries else "0-0")
            for key, entries in zip(stream_keys, results, strict=True)
        }

    async def history(
        self, stream_key: str, after: str, upto: str | None, count: int
    ) -> list[StreamEntry]:
        """Up to ``count`` entries after ``after`` (exclusive) up to ``upto`` (inclusive)."""
        entries: Any = await self.redis.xrange(
            stream_key, min=f"({after}", max=upto or "+", count=count
        )
        return list(entries)

    async def entries(self, stream_key: str, entry_ids: Sequence[str]) -> list[StreamEntry]:
        """The entries of ``entry_ids`` still in the stream, in the order given.

        One pipelined ``XRANGE id id`` per id: the cost follows the ids asked
        for, whatever the length of the stream.
        """
        if not entry_ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id in entry_ids:
                pipe.xrange(stream_key, min=entry_id, max=entry_id, count=1)
            results = await pipe.execute()
        return [entry for found in results for entry in found]

    async def reaches_back_to(self, stream_key: str, since: str) -> bool:
        """True when every entry after ``since`` is still retained in the stream.

        Trimming removes the oldest entries first, so while the entry ``since``
        itself is still there, everything after it is too. If it is gone, it
        was trimmed away or Redis lost its data; either way history is missing.
        ``0-0`` (from the very start) holds while nothing was ever trimmed.
        """
        if parse_stream_id(since) == NO_ID:
            try:
                info: dict[str, Any] = await self.redis.xinfo_stream(stream_key)
            except ResponseError:
                return True  # no stream yet: nothing was ever lost
            return int(info.get("entries-added", 0)) <= int(info.get("length", 0))
        found = await self.redis.xrange(stream_key, min=since, max=since, count=1)
        return bool(found)

    async def trim_older_than(self, stream_keys: Sequence[str], age_ms: int) -> None:
        """Drop entries older than ``age_ms`` from each stream."""
        if not stream_keys:
            return
        min_id = f"{max(now_ms() - age_ms, 0)}-0"
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in stream_keys:
                pipe.xtrim(key, minid=min_id, approximate=False)
            await pipe.execute()

"""Redis stream operations: the one publish path, stream ids, discovery and history."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

from redis.asyncio import Redis

from relay.keys import Keys
from relay.models import ProgressEvent

StreamEntry = tuple[str, dict[str, str]]


class PipelineLike(Protocol):
    """The commands the publish path queues; satisfied by sync and async redis pipelines."""

    def xadd(self, name: Any, fields: Any, *args: Any, **kwargs: Any) -> Any: ...

    def sadd(self, name: Any, *values: Any) -> Any: ...


def now_ms() -> int:
    """Milliseconds since the epoch, the unit of every ``ts``."""
    return time.time_ns() // 1_000_000


def queue_publish(
    pipe: PipelineLike, keys: Keys, events: Sequence[ProgressEvent], maxlen: int
) -> None:
    """Queue the commands that publish ``events``; shared by every publisher.

    The gateway's HTTP path and the Python reporters (sync and async) all call
    this, so an entry has the same shape whoever wrote it. The caller runs the
    pipeline; the first ``len(events)`` results are the new entry ids.
    """
    stamp = now_ms()
    for event in events:
        pipe.xadd(
            keys.stream(event.workflow_type),
            event.stamped(stamp).stream_fields(),
            maxlen=maxlen,
            approximate=True,
        )
    pipe.sadd(keys.types, *{event.workflow_type for event in events})


def parse_stream_id(entry_id: str) -> tuple[int, int]:
    """``"1700000000000-3"`` as ``(1700000000000, 3)`` for ordering; ValueError if malformed."""
    ms, sep, seq = entry_id.partition("-")
    if not ms.isdigit() or (sep and not seq.isdigit()):
        raise ValueError(f"not a stream id: {entry_id!r}")
    return int(ms), int(seq) if sep else 0


class StreamStore:
    """Publishing and reading the type streams over an asyncio Redis client."""

    def __init__(self, redis: Redis, keys: Keys, *, maxlen: int) -> None:
        self.redis = redis
        self.keys = keys
        self.maxlen = maxlen

    async def publish(self, events: Sequence[ProgressEvent]) -> list[str]:
        """Write ``events`` atomically (MULTI/EXEC) and return their stream ids."""
        if not events:
            return []
        async with self.redis.pipeline(transaction=True) as pipe:
            queue_publish(pipe, self.keys, events, self.maxlen)
            results = await pipe.execute()
        return [str(entry_id) for entry_id in results[: len(events)]]

    async def discover(self) -> set[str]:
        """Every type stream key: announced by publishers or created by raw XADD."""
        announced = await self.redis.smembers(self.keys.types)
        found = {self.keys.stream(str(t)) for t in announced}
        async for key in self.redis.scan_iter(
            match=self.keys.stream_pattern, count=1000, _type="stream"
        ):
            found.add(str(key))
        return {key for key in found if self.keys.workflow_type(key)}

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

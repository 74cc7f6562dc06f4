"""The gateway's Redis stream operations: publishing, discovery, probes and history."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.exceptions import ResponseError

from relay.client.stream_publisher import StreamPublisher
from relay.protocol.entries import StreamEntry, now_ms
from relay.protocol.stream_ids import START, StreamId


class StreamStore(StreamPublisher):
    """Publishing and reading the type streams over an asyncio Redis client."""

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

    async def last_ids(self, stream_keys: Sequence[str]) -> dict[str, StreamId]:
        """The newest entry id of each stream, :data:`START` for one that has no entry."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in stream_keys:
                pipe.xrevrange(key, count=1)
            results = await pipe.execute()
        return {
            key: (StreamId.from_redis(entries[0][0]) if entries else START)
            for key, entries in zip(stream_keys, results, strict=True)
        }

    async def history(
        self, stream_key: str, after: StreamId, upto: StreamId | None, count: int
    ) -> list[StreamEntry]:
        """Up to ``count`` entries after ``after`` (exclusive) up to ``upto`` (inclusive)."""
        entries: Any = await self.redis.xrange(
            stream_key, min=f"({after}", max="+" if upto is None else str(upto), count=count
        )
        return list(entries)

    async def entries(self, stream_key: str, entry_ids: Sequence[StreamId]) -> list[StreamEntry]:
        """The entries of ``entry_ids`` still in the stream, in the order given.

        One pipelined ``XRANGE id id`` per id: the cost follows the ids asked
        for, whatever the length of the stream.
        """
        if not entry_ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id in entry_ids:
                text = str(entry_id)
                pipe.xrange(stream_key, min=text, max=text, count=1)
            results = await pipe.execute()
        return [entry for found in results for entry in found]

    async def reaches_back_to(self, stream_key: str, since: StreamId) -> bool:
        """True when every entry after ``since`` is still retained in the stream.

        Trimming removes the oldest entries first, so while the entry ``since``
        itself is still there, everything after it is too. If it is gone, it
        was trimmed away or Redis lost its data; either way history is missing.
        :data:`START` (from the very start) holds while nothing was ever trimmed.
        """
        if since == START:
            try:
                info: dict[str, Any] = await self.redis.xinfo_stream(stream_key)
            except ResponseError:
                return True  # no stream yet: nothing was ever lost
            return int(info.get("entries-added", 0)) <= int(info.get("length", 0))
        text = str(since)
        found = await self.redis.xrange(stream_key, min=text, max=text, count=1)
        return bool(found)

    async def trim_older_than(self, stream_keys: Sequence[str], age_ms: int) -> None:
        """Drop entries older than ``age_ms`` from each stream."""
        if not stream_keys:
            return
        min_id = str(StreamId(max(now_ms() - age_ms, 0), 0))
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in stream_keys:
                pipe.xtrim(key, minid=min_id, approximate=False)
            await pipe.execute()

"""The gateway's Redis stream operations: publishing, discovery, probes and history."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import cached_property
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from relay.client.redis_urls import AsyncStore
from relay.client.stream_publisher import StreamPublisher
from relay.protocol.entries import StreamEntry, cancel_action, now_ms
from relay.protocol.event import ProgressEvent
from relay.protocol.stream_ids import START, StreamId

# Where a discovery SCAN goes on from: a cursor per node (one, unnamed, on a single Redis).
ScanCursor = dict[str, int]

# Writes one event that a gateway decided on, unless another gateway decided
# the same already, or the session reported meanwhile; atomically.
#
# KEYS[1] the type stream, KEYS[2] the decision's marker, KEYS[3] the
# session's pending-cancel flag (both named with the stream key as hash tag,
# so all three share the stream's cluster slot)
# ARGV[1] MAXLEN of the stream (approximate trimming, as every publish does)
# ARGV[2] milliseconds the marker lives
# ARGV[3] the session id, ARGV[4] the id of the entry the decision is about
# ARGV[5] "del" to clear the pending-cancel flag (a terminal event), else ""
# ARGV[6] how many entries after ARGV[4] to look through for one of the session
# ARGV[7...] the entry's fields and values
#
# Returns the new entry's id, or false when nothing was written.
DECIDE_SCRIPT = """
local unpack = table.unpack or unpack
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then
  return false
end
local later = redis.call('XRANGE', KEYS[1], '(' .. ARGV[4], '+', 'COUNT', ARGV[6])
for _, entry in ipairs(later) do
  local fields = entry[2]
  for i = 1, #fields - 1, 2 do
    if fields[i] == 'session_id' and fields[i + 1] == ARGV[3] then
      return false
    end
  end
end
if ARGV[5] == 'del' then
  redis.call('DEL', KEYS[3])
end
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 7))
"""


async def _cluster_id(redis: RedisCluster) -> str:
    """Every primary's address and run id, from a slot map read again if it is out of date.

    A graceful failover raises no error: the old primary answers on, as a
    replica, so its role tells the client's map is out of date.
    """
    for _ in range(2):
        answers: dict[str, dict[str, Any]] = await redis.info(
            "server", "replication", target_nodes=RedisCluster.PRIMARIES
        )
        if all(info.get("role") == "master" for info in answers.values()):
            break
        await redis.nodes_manager.initialize()
    return ",".join(f"{node}={info.get('run_id', '')}" for node, info in sorted(answers.items()))


class StreamStore(StreamPublisher[AsyncStore]):
    """Publishing and reading the type streams over an asyncio Redis client."""

    @cached_property
    def _decide_script(self) -> AsyncScript:
        return self.redis.register_script(DECIDE_SCRIPT)

    async def decide(
        self,
        *,
        marker: str,
        marker_ttl_ms: int,
        after: str,
        event: ProgressEvent,
        later_entries: int,
    ) -> str | None:
        """Write ``event`` once, however many gateways decide on it: its id, or None.

        ``marker`` names the decision; whoever sets it first writes the
        event. Nothing is written either when the session has an entry
        after ``after`` (among the next ``later_entries``): it reported since.
        """
        fields = event.stream_fields()
        stream = self.keys.stream(event.workflow_type)
        cancel = self.keys.cancel(stream, event.session_id)
        answer = await self._decide_script(
            keys=[stream, marker, cancel],
            args=[
                self.maxlen,
                marker_ttl_ms,
                event.session_id,
                after,
                cancel_action(event),
                later_entries,
                *(item for pair in fields.items() for item in pair),
            ],
        )
        return str(answer) if answer else None

    async def server_id(self) -> str:
        """The Redis server's run id, which changes whenever it restarts.

        On a cluster, every primary's address and run id: it changes when any
        of them restarts, or a failover puts another node in its place.
        """
        redis: Any = self.redis
        if isinstance(redis, RedisCluster):
            return await _cluster_id(redis)
        try:
            info: dict[str, Any] = await redis.info("server")
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

    async def scan_step(self, cursor: ScanCursor, count: int) -> tuple[ScanCursor, list[str]]:
        """One SCAN call for type streams per node: the next cursors and the keys found.

        A node's cursor is 0 again after a full pass of it. Continuing the
        cursors tick after tick makes every call cost the same, however many
        keys Redis holds.
        """
        redis: Any = self.redis
        match, kind = self.keys.stream_pattern, "stream"
        if not isinstance(redis, RedisCluster):
            next_cursor, keys = await redis.scan(
                cursor.get("", 0), match=match, count=count, _type=kind
            )
            return {"": int(next_cursor)}, [str(key) for key in keys]
        primaries = redis.get_primaries()
        answers: list[Any] = await asyncio.gather(
            *(
                redis.scan(
                    cursor.get(node.name, 0),
                    match=match,
                    count=count,
                    _type=kind,
                    target_nodes=node,
                )
                for node in primaries
            )
        )
        cursors: ScanCursor = {}
        found: list[str] = []
        for node, (next_cursors, keys) in zip(primaries, answers, strict=True):
            cursors[node.name] = int(next_cursors[node.name])
            found.extend(str(key) for key in keys)
        return cursors, found

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

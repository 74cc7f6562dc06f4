"""The gateway's single stream reader: one XREAD BLOCK loop over every type stream.

Every gateway reads every stream itself (no consumer group), so each one can
deliver every event to its own subscribers. The reader remembers the last id
per stream and resumes from there after a Redis error, backing off from 0.1 s
doubling up to a cap; new streams are discovered while it runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from relay.streams import StreamEntry, StreamStore

logger = logging.getLogger(__name__)

EntriesHandler = Callable[[str, list[StreamEntry]], None]

BACKOFF_START = 0.1
BACKOFF_CAP = 5.0
STOP_GRACE = 1.0


class StreamReader:
    """Reads every type stream from where it left off and hands entries on.

    ``handler(stream_key, entries)`` is called in stream order for each batch
    and must not block; it owns validation, so a bad entry never reaches here.
    """

    def __init__(
        self,
        store: StreamStore,
        connection: Redis,
        handler: EntriesHandler,
        *,
        count: int,
        block_ms: int,
        discovery_interval: float,
    ) -> None:
        self._store = store
        self._redis = connection
        self._handler = handler
        self._count = count
        self._block_ms = block_ms
        self._discovery_interval = discovery_interval
        self._next_discovery = 0.0
        self.positions: dict[str, str] = {}
        self.ready = False
        self.entries_read = 0
        self.redis_errors = 0
        self.started = asyncio.Event()
        self._stopping = False

    async def _discover(self, *, at_start: bool) -> None:
        loop = asyncio.get_running_loop()
        self._next_discovery = loop.time() + self._discovery_interval
        found = await self._store.discover()
        new = sorted(found - self.positions.keys())
        if not new:
            return
        if at_start:
            # What was there before we started is history, not news.
            self.positions.update(await self._store.last_ids(new))
        else:
            # A stream that appeared since is new to us from its first entry.
            self.positions.update(dict.fromkeys(new, "0-0"))
        logger.info("reading %d new stream(s): %s", len(new), ", ".join(new))

    async def _read_once(self) -> None:
        if asyncio.get_running_loop().time() >= self._next_discovery:
            await self._discover(at_start=False)
        if not self.positions:
            await asyncio.sleep(self._discovery_interval)
            return
        positions: Any = self.positions
        response: Any = await self._redis.xread(positions, count=self._count, block=self._block_ms)
        for stream, entries in response or ():
            if entries:
                self.positions[stream] = entries[-1][0]
                self.entries_read += len(entries)
                self._handler(stream, entries)

    async def run(self) -> None:
        """Read until :meth:`stop`; Redis errors are retried with backoff."""
        backoff = BACKOFF_START
        first = True
        while not self._stopping:
            try:
                if first:
                    await self._discover(at_start=True)
                    first = False
                    self.started.set()
                else:
                    await self._read_once()
                self.ready = True
                backoff = BACKOFF_START
            except (RedisError, OSError) as exc:
                self.ready = False
                self.redis_errors += 1
                logger.warning("stream reader: %s; retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_CAP)

    async def stop(self, task: asyncio.Task[None]) -> None:
        """Stop the reader running as ``task``.

        The loop is asked to finish after its current XREAD, which returns
        within ``block_ms``; cancelling a blocked XREAD is only the fallback,
        since a cancellation landing inside the client's read can be lost.
        """
        self._stopping = True
        grace = self._block_ms / 1000 + STOP_GRACE
        await asyncio.wait([task], timeout=grace)
        if not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=STOP_GRACE)

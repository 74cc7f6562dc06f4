"""The gateway's single stream reader: one XREAD BLOCK loop over every type stream.

Every gateway reads every stream itself (no consumer group), so each one can
deliver every event to its own subscribers. At start it reads the retained
history of each stream (so the session view can be rebuilt), handing those
entries on as history rather than news, then follows the streams live. It
remembers the last id per stream and resumes from there after a Redis error,
backing off from 0.1 s doubling up to a cap; new streams are discovered while
it runs, and a stream whose ids went backwards (Redis replaced by an empty
one) is started over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from relay.models import parse_stream_id
from relay.streams import StreamEntry, StreamStore

logger = logging.getLogger(__name__)

EntriesHandler = Callable[[str, list[StreamEntry], bool], None]

BACKOFF_START = 0.1
BACKOFF_CAP = 5.0
STOP_GRACE = 1.0


class StreamReader:
    """Reads every type stream from where it left off and hands entries on.

    ``handler(stream_key, entries, live)`` is called in stream order for each
    batch and must not block; ``live`` is False for the history read at start.
    The handler owns validation, so a bad entry never reaches here.
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
        self._stopping = False
        self._check_positions = False
        self._server_id: str | None = None
        # Per stream, the newest entry that existed at start: up to it is history.
        self._history_ends: dict[str, tuple[int, int]] = {}
        self.positions: dict[str, str] = {}
        # Publishers note new types here; reading it wakes discovery at once.
        self._announcements = store.keys.announcements
        self._announced = "0-0"
        # Per workflow type, how far behind the newest entry the reader was at
        # the last discovery, in milliseconds of stream id time.
        self.lag_ms: dict[str, int] = {}
        self.ready = False
        self.entries_read = 0
        self.redis_errors = 0
        self.restarts = 0
        self.started = asyncio.Event()

    @property
    def caught_up(self) -> bool:
        """True once the history that existed at start has been read."""
        return not self._history_ends

    def live_from(self, stream_key: str) -> str | None:
        """Entries after this id of ``stream_key`` will be routed live; None if not followed.

        That is the last id read, or while the history at start is still being
        read, the end of that history (which is never routed live).
        """
        history_end = self._history_ends.get(stream_key)
        if history_end is not None:
            return f"{history_end[0]}-{history_end[1]}"
        return self.positions.get(stream_key)

    async def _discover(self, *, at_start: bool) -> None:
        loop = asyncio.get_running_loop()
        self._next_discovery = loop.time() + self._discovery_interval
        # The client reconnects on its own, so a Redis that restarted or was
        # replaced may never surface as an error here: its run id tells.
        server_id = await self._store.server_id()
        if self._server_id is not None and server_id != self._server_id:
            logger.warning("Redis restarted or was replaced; checking stream positions")
            self._check_positions = True
        self._server_id = server_id
        found = await self._store.discover()
        new = sorted(found - self.positions.keys())
        # One pipelined call gives every stream's newest id: the end of the
        # history of new streams at start, and how far behind the reader is.
        heads = await self._store.last_ids(sorted(found | self.positions.keys()))
        self._measure_lag(heads)
        if not new:
            return
        if at_start:
            self._history_ends.update(
                (key, parse_stream_id(heads[key])) for key in new if heads[key] != "0-0"
            )
        # A stream is read from its first retained entry: at start that is the
        # history the session view is rebuilt from; later it is all news.
        self.positions.update(dict.fromkeys(new, "0-0"))
        logger.info("following %d new stream(s): %s", len(new), ", ".join(new))

    def _measure_lag(self, heads: dict[str, str]) -> None:
        """Milliseconds (of stream id time) between our position and each stream's newest entry.

        A stream not read at all yet (position ``0-0``) has no meaningful lag
        until its first read, unless it is empty.
        """
        lag: dict[str, int] = {}
        for key, head in heads.items():
            workflow_type = self._store.keys.workflow_type(key)
            position = self.positions.get(key, "0-0")
            if workflow_type is None or (position == "0-0" and head != "0-0"):
                continue
            try:
                head_ms, position_ms = parse_stream_id(head)[0], parse_stream_id(position)[0]
            except ValueError:
                continue
            lag[workflow_type] = max(head_ms - position_ms, 0)
        self.lag_ms = lag

    async def _restart_streams_that_went_back(self) -> None:
        """After an outage, start over any stream whose newest id is behind our position."""
        keys = list(self.positions)
        heads = await self._store.last_ids(keys)
        for key in keys:
            head, position = heads[key], self.positions[key]
            if parse_stream_id(head) < parse_stream_id(position):
                logger.warning(
                    "stream %s went back from %s to %s: Redis lost its data; starting over",
                    key,
                    position,
                    head,
                )
                self.positions[key] = "0-0"
                self._history_ends.pop(key, None)
                self.restarts += 1

    def _hand_on(self, stream: str, entries: list[StreamEntry]) -> None:
        history_end = self._history_ends.get(stream)
        if history_end is None:
            self._handler(stream, entries, True)
            return
        split = len(entries)
        for index, (entry_id, _) in enumerate(entries):
            if parse_stream_id(entry_id) > history_end:
                split = index
                break
        if split:
            self._handler(stream, entries[:split], False)
        if split < len(entries) or parse_stream_id(entries[-1][0]) == history_end:
            del self._history_ends[stream]
        if split < len(entries):
            self._handler(stream, entries[split:], True)

    async def _read_once(self) -> None:
        if asyncio.get_running_loop().time() >= self._next_discovery:
            await self._discover(at_start=False)
        if self._check_positions:
            await self._restart_streams_that_went_back()
            self._check_positions = False
        streams: Any = {**self.positions, self._announcements: self._announced}
        response: Any = await self._redis.xread(streams, count=self._count, block=self._block_ms)
        for stream, entries in response or ():
            if stream == self._announcements:
                self._announced = entries[-1][0]
                self._next_discovery = 0.0
            elif entries:
                self.positions[stream] = entries[-1][0]
                self.entries_read += len(entries)
                self._hand_on(stream, entries)

    async def run(self) -> None:
        """Read until :meth:`stop`; Redis errors are retried with backoff."""
        backoff = BACKOFF_START
        while not self._stopping:
            try:
                if not self.started.is_set():
                    await self._discover(at_start=True)
                    latest = await self._store.last_ids([self._announcements])
                    self._announced = latest[self._announcements]
                    self.started.set()
                else:
                    await self._read_once()
                self.ready = True
                backoff = BACKOFF_START
            except (RedisError, OSError) as exc:
                self.ready = False
                self._check_positions = True
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

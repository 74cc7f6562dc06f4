"""The gateway's single stream reader: one loop of XREAD BLOCK over every type stream.

Every gateway reads every stream itself (no consumer group), so each one can
deliver every event to its own subscribers. At start it reads the retained
history of each stream (so the session view can be rebuilt), handing those
entries on as history rather than news, then follows the streams live. It
remembers the last id per stream and resumes from there after a Redis error,
backing off from 0.1 s doubling up to a cap.

On a single Redis that loop is one XREAD over every stream. On a Redis
Cluster it is one XREAD per group of streams sharing a hash slot, each on the
primary serving it, the one loop handling whichever returns first
(:mod:`relay.server.read_groups`); a group that fails backs off on its own
while the others go on.

Finding streams costs the same whatever their number: publishers through
relay announce new types on a short stream the reader blocks on, so those are
followed at once; streams made by a raw ``XADD`` are found by one bounded
SCAN call per discovery tick on each primary, continuing its cursor from tick
to tick. Lag costs nothing more: it is read off what XREAD answered (a short
batch left nothing behind; a full one was as far behind as its last entry is old).

After an outage, or when Redis restarted (a primary's run id changed, which a
failover does too), every stream is
checked once: an id counter behind our position, an entry we read that is gone
while older ones are still there, or an epoch key that vanished or changed
means the history was lost or rewritten. Such a stream gets a new epoch (one
compare-and-set in Redis, so every gateway agrees), the session view of its
type is rebuilt from what it retains, read as history, and its subscribers
are told to refetch. Entries up to what was read before are never news again.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from redis.exceptions import ResponseError

from relay.client.redis_urls import AsyncStore
from relay.protocol.entries import StreamEntry, now_ms
from relay.protocol.event import WORKFLOW_TYPE_PATTERN
from relay.protocol.stream_ids import START, StreamId
from relay.server.read_groups import STORE_ERRORS, ReadGroups
from relay.server.stream_checks import StreamChecks, StreamState
from relay.server.stream_store import ScanCursor, StreamStore

logger = logging.getLogger(__name__)

BACKOFF_START = 0.1
BACKOFF_CAP = 5.0
STOP_GRACE = 1.0
# Keys one discovery tick's SCAN call looks at, whatever the number of keys.
SCAN_COUNT = 1000
STREAM_KINDS = frozenset({"stream", "none"})
_TYPE_NAME = re.compile(WORKFLOW_TYPE_PATTERN)


class _GroupsFailing(Exception):
    """Some group's read failed: counted already; the reader is not ready meanwhile."""


class StreamHandler(Protocol):
    """Where the reader hands what it reads (the gateway's :class:`~relay.server.ingest.Ingest`)."""

    def __call__(self, stream_key: str, entries: list[StreamEntry], live: bool) -> None:
        """Entries of one stream, in order; ``live`` is False for history. Must not block."""

    def forget(self, stream_key: str) -> None:
        """The stream's history was lost or rewritten: drop what was derived from it."""

    def reset(self, stream_key: str, epoch: str) -> None:
        """What the stream retains was read again: tell its subscribers to refetch."""


class StreamReader:
    """Reads every type stream from where it left off and hands entries on.

    The handler is called in stream order for each batch and must not block.
    It owns validation, so a bad entry never reaches here.
    """

    def __init__(
        self,
        store: StreamStore,
        connection: AsyncStore,
        handler: StreamHandler,
        *,
        count: int,
        block_ms: int,
        discovery_interval: float,
    ) -> None:
        self._store = store
        self._checks = StreamChecks(store.redis, store.keys)
        self._keys = store.keys
        self._handler = handler
        self._count = count
        self._block_ms = block_ms
        self._discovery_interval = discovery_interval
        self._next_tick = 0.0
        self._scan_cursor: ScanCursor = {}
        self._stopping = False
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._check_streams = False
        self._check_types = False
        self._server_id: str | None = None
        # Per stream, the newest entry that existed at start (or at a reset):
        # up to it is history.
        self._history_ends: dict[str, StreamId] = {}
        # Per stream reset, the newest id read before the reset: entries up to
        # it may have been delivered already, so they are never news again.
        self._floors: dict[str, StreamId] = {}
        # Streams being read again after a reset, with their new epoch; the
        # subscribers hear of it once the view is rebuilt.
        self._resetting: dict[str, str] = {}
        # Per group failing, the backoff before its next read after another failure.
        self._group_backoffs: dict[int, float] = {}
        # Per stream, the positions it was read from since Redis's run id was
        # last seen unchanged: a replaced Redis may answer XREADs before the
        # run id check, so the check looks at each of them.
        self._moved_from: dict[str, list[StreamId]] = {}
        self._ignored: set[str] = set()
        # Per followed stream, the last id read.
        self.positions: dict[str, StreamId] = {}
        self.epochs: dict[str, str | None] = {}
        # Publishers note new types here; reading it follows them at once.
        self._announcements = self._keys.announcements
        self._announced = START
        # What each XREAD is given: the positions, and the announcements', as
        # text, by slot group. Updated with the text Redis answered, so a read
        # formats nothing and copies nothing, however many streams there are.
        self._groups = ReadGroups(connection, count=count, block_ms=block_ms)
        self._groups.set(self._announcements, str(START))
        # Per workflow type, how far behind the stream's newest entry the last
        # read left the reader, in milliseconds: 0 when that read returned less
        # than a whole batch (nothing was left), else the age of its last entry.
        self.lag_ms: dict[str, int] = {}
        self.ready = False
        self.entries_read = 0
        self.redis_errors = 0
        # The latest Redis error met, for saying why the start is taking long.
        self.last_error: str | None = None
        self.failures = 0
        # Redis errors, of the loop and of every group's read, since the reader
        # last went round with nothing failing: an outage is warned of once,
        # not at every retry or by every group, and its end is told.
        self._outage_errors = 0
        self.resets = 0
        self.restarts = 0
        self.ignored_keys = 0
        self.ticks = 0
        self.started = asyncio.Event()

    @property
    def caught_up(self) -> bool:
        """True once the history that existed at start has been read."""
        return not self._history_ends

    @property
    def problem(self) -> str | None:
        """Why the reader is not following every stream live right now, or None."""
        if self.ready:
            return None if self.caught_up else "stream reader is still reading the history"
        if self._task is not None and self._task.done():
            return "stream reader stopped; starting it again"
        return "stream reader is not following the streams"

    def live_from(self, stream_key: str) -> StreamId | None:
        """Entries after this id of ``stream_key`` will be routed live; None if not followed.

        That is the last id read, or while history is still being read (at
        start, or after a reset) the end of that history, which is never
        routed live.
        """
        position = self.positions.get(stream_key)
        if position is None:
            return None
        return max(
            position,
            self._history_ends.get(stream_key, START),
            self._floors.get(stream_key, START),
        )

    def _move(self, stream: str, to: StreamId) -> None:
        """Read ``stream`` (a followed one, or the announcements) after ``to`` from now on."""
        if stream == self._announcements:
            self._announced = to
        else:
            self.positions[stream] = to
        self._groups.set(stream, str(to))

    def _ignore(self, key: str, why: str) -> None:
        if key not in self._ignored:
            self._ignored.add(key)
            self.ignored_keys += 1
            logger.warning("ignoring key %r: %s", key, why)

    def _drop(self, key: str, why: str) -> None:
        """Stop following a key that is no stream any more."""
        self._groups.remove(key)
        for state in (
            self.positions,
            self.epochs,
            self._history_ends,
            self._floors,
        ):
            state.pop(key, None)
        self._resetting.pop(key, None)
        self._moved_from.pop(key, None)
        workflow_type = self._keys.workflow_type(key)
        if workflow_type is not None:
            self.lag_ms.pop(workflow_type, None)
        self._ignore(key, why)

    async def _follow(self, candidates: Iterable[str], *, at_start: bool) -> None:
        """Start following the streams among ``candidates`` not followed yet."""
        named = []
        for key in sorted(set(candidates) - self.positions.keys()):
            workflow_type = self._keys.workflow_type(key)
            if workflow_type is None or not _TYPE_NAME.fullmatch(workflow_type):
                self._ignore(key, "not a valid workflow type name")
            else:
                named.append(key)
        if not named:
            return
        kinds = await self._checks.key_types(named)
        streams = []
        for key in named:
            if kinds[key] in STREAM_KINDS:
                streams.append(key)
            else:
                self._ignore(key, f"a {kinds[key]}, not a stream")
        if not streams:
            return
        self._ignored.difference_update(streams)
        self.epochs.update(await self._checks.ensure_epochs(streams))
        if at_start:
            heads = await self._store.last_ids(streams)
            self._history_ends.update((key, heads[key]) for key in streams if heads[key] != START)
        # A stream is read from its first retained entry: at start that is the
        # history the session view is rebuilt from; later it is all news.
        for key in streams:
            self._move(key, START)
        logger.info("following %d new stream(s): %s", len(streams), ", ".join(streams))

    async def _start(self) -> None:
        # The announcements first: a type announced during discovery is not missed.
        latest = await self._store.last_ids([self._announcements])
        self._move(self._announcements, latest[self._announcements])
        self._server_id = await self._store.server_id()
        await self._follow(await self._store.discover(), at_start=True)
        self._next_tick = asyncio.get_running_loop().time() + self._discovery_interval

    async def _tick(self) -> None:
        """Periodic work, a fixed number of Redis calls per primary: run id, one SCAN step."""
        self._next_tick = asyncio.get_running_loop().time() + self._discovery_interval
        self.ticks += 1
        # The client reconnects on its own, so a Redis that restarted or was
        # replaced may never surface as an error here: its run id tells (on a
        # cluster, every primary's, so a failover tells too).
        server_id = await self._store.server_id()
        if self._server_id is not None and server_id != self._server_id:
            logger.warning("Redis restarted or was replaced; checking every stream")
            self._check_streams = True
            self._groups.refresh_topology()
        elif not self._check_streams:
            self._moved_from.clear()
        self._server_id = server_id
        self._scan_cursor, found = await self._store.scan_step(self._scan_cursor, SCAN_COUNT)
        await self._follow(found, at_start=False)

    def _lost_history(self, key: str, state: StreamState, gone: list[StreamId]) -> str | None:
        """Why ``key`` no longer holds the history we read, or None when it still does.

        ``gone`` are earlier positions of this stream whose entries are missing.
        """
        if state.epoch != self.epochs.get(key):
            return "its epoch vanished" if state.epoch is None else "its epoch changed"
        position = self.positions[key]
        if state.generated < position:
            return f"its ids went back from {position} to {state.generated}"
        if not state.holds_position:
            gone = [position, *gone]
        first = state.first
        for missing in gone:
            # Trimming removes the oldest entries first: one missing while
            # older ones are retained was not trimmed, it never existed here.
            if START < first < missing:
                return f"entry {missing} is gone while older ones are retained"
        return None

    async def _verify(self) -> None:
        """After an outage: reset every stream whose history was lost or rewritten."""
        positions = self.positions
        states = await self._checks.stream_states(positions) if positions else {}
        earlier = [
            (key, at)
            for key, ats in self._moved_from.items()
            if key in positions
            for at in ats
            if at != START
        ]
        gone: dict[str, list[StreamId]] = {}
        for (key, at), there in zip(earlier, await self._checks.holding(earlier), strict=True):
            if not there:
                gone.setdefault(key, []).append(at)
        lost: dict[str, str] = {}
        for key, state in states.items():
            if state.kind not in STREAM_KINDS:
                self._drop(key, f"a {state.kind}, not a stream")
            elif (why := self._lost_history(key, state, gone.get(key, []))) is not None:
                lost[key] = why
        if lost:
            epochs = await self._checks.bump_epochs({key: self.epochs.get(key) for key in lost})
            for key, why in lost.items():
                self._reset(key, states[key], epochs[key], why)
        latest = (await self._store.last_ids([self._announcements]))[self._announcements]
        if latest < self._announced:
            self._move(self._announcements, latest)
        self._moved_from.clear()
        self._check_streams = False

    def _reset(self, key: str, state: StreamState, epoch: str, why: str) -> None:
        """Read ``key`` again from its start as history; news only past what was read before."""
        # Entries up to here were delivered, or were history never to be news.
        floor = max(
            self.positions[key],
            self._floors.get(key, START),
            self._history_ends.get(key, START),
        )
        logger.warning(
            "stream %s lost or rewrote its history (%s): new epoch %s; rebuilding from what "
            "it retains",
            key,
            why,
            epoch,
        )
        self.resets += 1
        self.epochs[key] = epoch
        self._move(key, START)
        if floor != START:
            self._floors[key] = floor
        self._history_ends.pop(key, None)
        self._handler.forget(key)
        history_end = min(state.head, floor)
        if history_end == START:
            self._handler.reset(key, epoch)
        else:
            self._history_ends[key] = history_end
            self._resetting[key] = epoch

    async def _drop_non_streams(self) -> None:
        """After WRONGTYPE: stop following whatever is no stream any more."""
        kinds = await self._checks.key_types(list(self.positions))
        for key, kind in kinds.items():
            if kind not in STREAM_KINDS:
                self._drop(key, f"a {kind}, not a stream")
        self._check_types = False

    def _hand_on(self, stream: str, entries: list[StreamEntry], last: StreamId) -> None:
        """Hand ``entries`` on as history up to the stream's limits and as news past them.

        ``last`` is the id of the last of ``entries``, parsed already.
        """
        history_end = self._history_ends.get(stream)
        floor = self._floors.get(stream)
        if history_end is None and floor is None:
            self._handler(stream, entries, True)
            return
        limit = max(history_end or START, floor or START)
        split = len(entries)
        if last > limit:
            for index, (entry_id, _) in enumerate(entries):
                if StreamId.from_redis(entry_id) > limit:
                    split = index
                    break
        if split:
            self._handler(stream, entries[:split], False)
        if history_end is not None and last >= history_end:
            del self._history_ends[stream]
            epoch = self._resetting.pop(stream, None)
            if epoch is not None:
                self._handler.reset(stream, epoch)
        if split < len(entries):
            self._floors.pop(stream, None)
            self._handler(stream, entries[split:], True)

    def _announced_streams(self, entries: list[StreamEntry]) -> Iterator[str]:
        """The streams announcement entries name (untrusted: names are checked when followed)."""
        for _, fields in entries:
            for workflow_type in fields.get("types", "").split(","):
                if workflow_type:
                    yield self._keys.stream(workflow_type)

    def _note_read(self, stream: str, count: int, last: StreamId) -> None:
        """The stream's lag, from what one read returned: no Redis call needed."""
        workflow_type = self._keys.workflow_type(stream)
        if workflow_type is not None:
            behind = max(now_ms() - last.ms, 0) if count >= self._count else 0
            self.lag_ms[workflow_type] = behind

    async def _read_once(self) -> None:
        """Periodic and pending work, then wait for the first group read to return."""
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next_tick:
            await self._tick()
        if self._check_types:
            await self._drop_non_streams()
        if self._check_streams:
            await self._verify()
        timeout = max(self._next_tick - loop.time(), 0)
        announced: list[str] = []
        for group, response, error in await self._groups.wait(timeout, self._stop):
            if error is not None:
                self._group_failed(group, error)
                continue
            self._group_answered(group)
            announced.extend(self._take(response))
        if announced:
            await self._follow(announced, at_start=False)
        if self._groups.failing():
            raise _GroupsFailing

    def _take(self, response: Any) -> list[str]:
        """Hand on what one XREAD answered; the streams announcements name."""
        announced: list[str] = []
        for stream, entries in response or ():
            if stream == self._announcements:
                self._move(stream, StreamId.from_redis(entries[-1][0]))
                announced.extend(self._announced_streams(entries))
            elif entries and stream in self.positions:
                self._moved_from.setdefault(stream, []).append(self.positions[stream])
                # As _move does, but keeping the text Redis gave: this runs for every batch.
                text = entries[-1][0]
                last = self.positions[stream] = StreamId.from_redis(text)
                self._groups.advance(stream, text)
                self.entries_read += len(entries)
                self._note_read(stream, len(entries), last)
                self._hand_on(stream, entries, last)
        return announced

    def _store_error(self, exc: BaseException) -> None:
        """Count a Redis error and schedule what it calls for: checks, a new slot map."""
        self.redis_errors += 1
        self._check_streams = True
        self._groups.refresh_topology()
        if isinstance(exc, ResponseError) and str(exc).startswith("WRONGTYPE"):
            self._check_types = True
        self.last_error = str(exc) or type(exc).__name__

    def _group_failed(self, group: int, exc: BaseException) -> None:
        """One group's read failed: it backs off alone, the other groups read on."""
        backoff = self._group_backoffs.get(group, BACKOFF_START)
        if isinstance(exc, STORE_ERRORS):
            # A node going away fails every group it serves: one outage.
            self._store_failed(exc, backoff)
        else:
            self.failures += 1
            logger.error("stream reader failed; carrying on in %.1fs", backoff, exc_info=exc)
        self._group_backoffs[group] = min(backoff * 2, BACKOFF_CAP)
        self._groups.hold(group, asyncio.get_running_loop().time() + backoff)

    def _group_answered(self, group: int) -> None:
        self._group_backoffs.pop(group, None)
        self._groups.release(group)

    def _store_failed(self, exc: BaseException, backoff: float) -> None:
        """Count a Redis error of the loop or of a group's read; warn once an outage."""
        self._store_error(exc)
        # Before the first start the gateway says once that Redis is not reachable.
        first = not self._outage_errors and self.started.is_set()
        self._outage_errors += 1
        logger.log(
            logging.WARNING if first else logging.DEBUG,
            "stream reader: %s; retrying in %.1fs",
            exc,
            backoff,
        )

    async def run(self) -> None:
        """Read until :meth:`stop`; errors are logged, counted and retried with backoff."""
        backoff = BACKOFF_START
        if self.started.is_set():
            # Started again after the task ended: anything may have happened meanwhile.
            self._check_streams = True
        try:
            while not self._stopping:
                try:
                    if not self.started.is_set():
                        await self._start()
                        self.started.set()
                    else:
                        await self._read_once()
                    if self._outage_errors:
                        logger.info(
                            "stream reader: Redis answers again after %d error(s)",
                            self._outage_errors,
                        )
                    self.ready = True
                    self._outage_errors = 0
                    backoff = BACKOFF_START
                    continue
                except _GroupsFailing:
                    # Counted and backing off per group: the loop goes on at once.
                    self.ready = False
                    continue
                except STORE_ERRORS as exc:
                    self._store_failed(exc, backoff)
                except Exception:
                    # A bug must not stop delivery for good: the batch at fault
                    # was already passed (positions move before hand-on).
                    self.failures += 1
                    logger.exception("stream reader failed; carrying on in %.1fs", backoff)
                self.ready = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_CAP)
        finally:
            self.ready = False
            await self._groups.aclose(STOP_GRACE)

    async def supervise(self) -> None:
        """Run the reader until :meth:`stop`, starting it again whenever its task ends."""
        loop = asyncio.get_running_loop()
        backoff = BACKOFF_START
        while not self._stopping:
            began = loop.time()
            task = self._task = loop.create_task(self.run(), name="relay-stream-reader")
            await asyncio.wait([task])
            if self._stopping:
                return
            self.restarts += 1
            error = None if task.cancelled() else task.exception()
            logger.error(
                "stream reader stopped unexpectedly; starting it again in %.1fs",
                backoff,
                exc_info=error,
            )
            # A reader that ran well for a while starts over with a short backoff.
            if loop.time() - began > BACKOFF_CAP:
                backoff = BACKOFF_START
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_CAP)

    async def stop(self, task: asyncio.Task[None]) -> None:
        """Stop the reader running as ``task`` (:meth:`run` or :meth:`supervise`).

        The loop is woken at once and cancels its pending reads itself;
        cancelling the task is only the fallback, since a cancellation landing
        inside the client's read can be lost.
        """
        self._stopping = True
        self._stop.set()
        grace = self._block_ms / 1000 + STOP_GRACE
        await asyncio.wait([task], timeout=grace)
        if not task.done():
            for running in (task, self._task):
                if running is not None:
                    running.cancel()
            await asyncio.wait([task], timeout=STOP_GRACE)

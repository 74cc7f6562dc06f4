"""One connected subscriber: a bounded outbox, conflation, and its own writer task.

The hub hands every matching event to :meth:`Subscriber.deliver`, which never
waits. A writer task per subscriber drains the outbox at whatever pace the
client reads, so one slow socket cannot delay the others. The writer runs
only while there is something to send: an idle connection holds no task.
When the outbox overflows it is conflated: only the newest event per
session survives, and terminal events and control frames are always kept. A subscriber that stays
behind even then, or whose socket accepts nothing for ``send_timeout``
seconds, is closed with :data:`CLOSE_SLOW_CONSUMER`; the gateway looks for
such stuck sends once a second (:meth:`Subscriber.check_send`), which costs
far less than a timeout around every send.

A replay (a subscription with ``since``) holds a :class:`ReplayMark` in the
outbox: live events queue up behind it while the history is fetched, and the
writer sends nothing past the mark until the history has taken its place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from relay.models import Envelope

logger = logging.getLogger(__name__)

CLOSE_GOING_AWAY = 1001
CLOSE_SLOW_CONSUMER = 4008

SendText = Callable[[str], Awaitable[object]]
CloseConnection = Callable[[int, str], Awaitable[object]]
SubscriptionKey = tuple[str, str | None]


class ReplayMark:
    """A place in the outbox that history will fill; nothing after it is sent before."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[Envelope | str] | None = None


Item = Envelope | str | ReplayMark
Render = Callable[[Envelope | str], str]
Join = Callable[[list[str]], str]

# Most rendered items sent in one message when a backlog has built up.
MAX_BATCH = 100


def websocket_text(item: Envelope | str) -> str:
    """Events as their JSON frame; control frames are JSON text already."""
    return item if isinstance(item, str) else item.frame


def websocket_batch(frames: list[str]) -> str:
    """One frame as it is; several as one JSON array, so a backlog costs one send."""
    return frames[0] if len(frames) == 1 else "[" + ",".join(frames) + "]"


class Subscriber:
    """A connection's delivery side; transport-agnostic (WebSocket or SSE)."""

    __slots__ = (
        "_close",
        "_closing",
        "_ended",
        "_join",
        "_limit",
        "_over",
        "_queue",
        "_render",
        "_send",
        "_send_started",
        "_send_timeout",
        "_sending",
        "_stalled",
        "_writer",
        "conflated",
        "delivered",
        "dropped_slow",
        "floors",
        "name",
        "subscriptions",
    )

    def __init__(
        self,
        send: SendText,
        close: CloseConnection,
        *,
        limit: int,
        send_timeout: float = 30.0,
        name: str = "",
        render: Render = websocket_text,
        join: Join = websocket_batch,
    ) -> None:
        self._send = send
        self._render = render
        self._join = join
        self._close = close
        self._limit = limit
        self._send_timeout = send_timeout
        # A list rather than a deque: an empty deque costs about 600 bytes per
        # connection, and the writer takes the outbox in slices anyway.
        self._queue: list[Item] = []
        self._writer: asyncio.Task[None] | None = None
        self._closing: tuple[int, str] | None = None
        # Sending is allowed between start() and the end; _ended is only made
        # for those who wait for the end (see finished()).
        self._sending = False
        self._send_started = 0.0
        self._stalled = False
        self._over = False
        self._ended: asyncio.Future[None] | None = None
        self.name = name
        self.subscriptions: set[SubscriptionKey] = set()
        # Per workflow type, the id at and below which live events were already seen.
        self.floors: dict[str, tuple[int, int]] = {}
        self.conflated = 0
        self.delivered = 0
        self.dropped_slow = False

    @property
    def queued(self) -> int:
        """Items waiting in the outbox."""
        return len(self._queue)

    def start(self) -> None:
        """Start sending: what is queued now, and whatever is delivered later."""
        self._sending = True
        if self._queue or self._closing is not None:
            self._wake()

    async def finished(self, within: float) -> bool:
        """Wait up to ``within`` seconds for the connection to be over; True once it is."""
        if not self._over:
            if self._ended is None:
                self._ended = asyncio.get_running_loop().create_future()
            await asyncio.wait([self._ended], timeout=within)
        return self._over

    async def stop(self) -> None:
        """Stop sending and drop whatever is still queued."""
        self._end()
        writer = self._writer
        if writer is not None and not writer.done():
            writer.cancel()
            # wait() never raises the writer's CancelledError, only our own.
            await asyncio.wait([writer])
        self._queue.clear()

    def _end(self) -> None:
        """Nothing more is sent: the connection was closed, broke or is stopped."""
        self._sending = False
        self._over = True
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(None)

    def deliver(self, item: Envelope | str) -> None:
        """Queue an event or a control frame; never blocks."""
        if self._closing is not None:
            return
        floors = self.floors
        if floors and isinstance(item, Envelope):
            floor = floors.get(item.workflow_type)
            if floor is not None and item.key <= floor:
                return
        queue = self._queue
        queue.append(item)
        if len(queue) > self._limit:
            self._conflate()
        self._wake()

    def hold(self) -> ReplayMark:
        """Reserve the current end of the outbox for frames that are not known yet."""
        mark = ReplayMark()
        self._queue.append(mark)
        return mark

    def release(
        self,
        mark: ReplayMark,
        items: list[Envelope | str],
        floor: tuple[str, tuple[int, int]] | None = None,
    ) -> None:
        """Fill a reserved place; the writer sends these items, then what queued behind.

        With ``floor`` (a workflow type and a stream id) the client already has
        that type's events up to the id: those queued behind the mark are
        dropped, and so are any delivered later.
        """
        mark.items = items
        if floor is not None:
            workflow_type, key = floor
            self.floors[workflow_type] = key
            queue = self._queue
            if mark in queue:
                behind = queue.index(mark) + 1
                queue[behind:] = [
                    item
                    for item in queue[behind:]
                    if not (
                        isinstance(item, Envelope)
                        and item.workflow_type == workflow_type
                        and item.key <= key
                    )
                ]
        self._wake()

    def close_later(self, code: int, reason: str) -> None:
        """Ask the writer to close the connection once it gets to it."""
        if self._closing is None:
            self._closing = (code, reason)
            self._queue.clear()
            self._wake()

    def _wake(self) -> None:
        if self._writer is None and self._sending:
            self._writer = asyncio.get_running_loop().create_task(self._write())

    def _conflate(self) -> None:
        seen: set[tuple[str, str]] = set()
        kept: list[Item] = []
        for item in reversed(self._queue):
            if not isinstance(item, Envelope) or item.terminal:
                kept.append(item)
                continue
            key = (item.workflow_type, item.session_id)
            if key not in seen:
                seen.add(key)
                kept.append(item)
        kept.reverse()
        self.conflated += len(self._queue) - len(kept)
        # Leaving the outbox nearly full would mean conflating again on every
        # event; a subscriber that far behind is better told to reconnect.
        if len(kept) > self._limit * 3 // 4:
            logger.info("closing %s: outbox still full after conflation", self.name)
            self.dropped_slow = True
            self.close_later(CLOSE_SLOW_CONSUMER, "slow consumer")
            return
        self._queue = kept

    def _take(self) -> list[str]:
        """Everything sendable now: the queue up to the first unfilled replay mark."""
        queue, render = self._queue, self._render
        frames: list[str] = []
        taken = 0
        for item in queue:
            if isinstance(item, ReplayMark):
                if item.items is None:
                    break
                frames.extend(render(replayed) for replayed in item.items)
            else:
                frames.append(render(item))
            taken += 1
        del queue[:taken]
        return frames

    def check_send(self, now: float) -> None:
        """Close the connection if its current send has waited ``send_timeout`` seconds.

        ``now`` is the event loop's clock; the gateway calls this periodically
        for every subscriber.
        """
        started, writer = self._send_started, self._writer
        if writer is None or not started or self._stalled:
            return
        if now - started >= self._send_timeout:
            self._stalled = True
            writer.cancel()

    async def _write(self) -> None:
        """Send until the outbox is empty or held at a replay mark, then end."""
        clock = asyncio.get_running_loop().time
        try:
            while True:
                if self._closing is not None:
                    await self._close_now(*self._closing)
                    return
                frames = self._take()
                if not frames:
                    return
                for start in range(0, len(frames), MAX_BATCH):
                    if self._closing is not None:
                        break
                    chunk = frames[start : start + MAX_BATCH]
                    self._send_started = clock()
                    await self._send(self._join(chunk))
                    self._send_started = 0.0
                    self.delivered += len(chunk)
        except asyncio.CancelledError:
            if not self._stalled or self._over:
                raise
            logger.info(
                "closing %s: socket accepted nothing for %ss", self.name, self._send_timeout
            )
            self.dropped_slow = True
            await self._close_now(CLOSE_SLOW_CONSUMER, "slow consumer")
        except (ConnectionError, RuntimeError) as exc:
            # The peer went away mid-send; the connection handler cleans up.
            logger.debug("writer for %s stopped: %s", self.name, exc)
            self._end()
        finally:
            self._send_started = 0.0
            self._writer = None

    async def _close_now(self, code: int, reason: str) -> None:
        try:
            await self._close(code, reason)
        finally:
            self._end()

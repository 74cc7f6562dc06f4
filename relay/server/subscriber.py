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
writer sends nothing past the mark until the history has taken its place. The
current state a subscription starts with (a session's latest event, a
snapshot) travels in a mark too, filled at once: however large, it counts as
one item of the outbox, and the writer sends it in messages of
:data:`MAX_BATCH`. When the writer reaches a mark it drops the events the
connection's other subscriptions already deliver (see :mod:`relay.server.coverage`).

A WebSocket subscriber may have a :class:`DirectWrite`: then what is delivered
while its socket takes bytes at once is not handed to a writer task but
written straight to the transport as prebuilt frames, by the gateway's
:class:`Flusher` once the callback routing it (a batch the reader read) is
done, so one write carries everything the batch brought the connection. The
writer task takes over whenever a send would have to wait (the transport
paused, above its high-water mark), whenever a mark is in the outbox, and to
close; the two never run at once, so the order of the outbox is the order on
the wire.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from relay.protocol.frames import Envelope, SubscriptionKey
from relay.server.coverage import Coverage, Cut, Cuts, below_floors, uncovered

logger = logging.getLogger(__name__)

CLOSE_GOING_AWAY = 1001
CLOSE_SLOW_CONSUMER = 4008

SendText = Callable[[str], Awaitable[object]]
CloseConnection = Callable[[int, str], Awaitable[object]]
Settle = Callable[[], object]


class ReplayMark:
    """A place in the outbox for what is not a live event; nothing after it is sent before.

    ``items`` stays None until they are known (a replay being read).
    """

    __slots__ = ("items", "key", "lower_to", "settle", "state")

    def __init__(self, key: SubscriptionKey) -> None:
        self.key = key
        self.items: list[Envelope | str] | None = None
        # Once placed: the subscription's events above this id are all delivered.
        self.lower_to: Cut | None = None
        # Once placed: the latest event of each of its sessions as of this id was sent.
        self.state: Cuts | None = None
        # Called once, when the writer takes the items or they will never be sent.
        self.settle: Settle | None = None

    def settled(self) -> None:
        """Run the ``settle`` callback, once."""
        settle, self.settle = self.settle, None
        if settle is not None:
            settle()


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


class DirectWrite(Protocol):
    """A connection that can take frames as bytes, without waiting, while its transport allows."""

    def writable(self) -> bool:
        """Whether bytes written now go out without waiting (open, not paused)."""

    def encode(self, items: list[Envelope | str]) -> bytes:
        """Outbox items as the whole frames that carry them on the wire."""

    def write(self, data: bytes) -> None:
        """Hand ``data`` to the transport; it never waits."""


class Flusher:
    """The subscribers with something to write directly, written once the current callback ends.

    One per gateway: everything routed in one callback (a batch of entries
    the reader read) reaches each connection in one write, and the cost of
    scheduling is one ``call_soon`` per batch, not per delivery.
    """

    __slots__ = ("_due",)

    def __init__(self) -> None:
        self._due: list[Subscriber] = []

    def add(self, subscriber: Subscriber) -> None:
        """Write ``subscriber``'s outbox soon, after the callback running now."""
        if not self._due:
            asyncio.get_running_loop().call_soon(self.flush)
        self._due.append(subscriber)

    def flush(self) -> None:
        """Write every outbox that asked to be written."""
        due, self._due = self._due, []
        for subscriber in due:
            try:
                subscriber.flush()
            except Exception:
                # One connection's failure must not leave the others unwritten.
                logger.exception("writing to %s failed", subscriber.name)


class Subscriber:
    """A connection's delivery side; transport-agnostic (WebSocket or SSE)."""

    __slots__ = (
        "_close",
        "_closing",
        "_direct",
        "_due",
        "_ended",
        "_floored",
        "_flusher",
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
        direct: DirectWrite | None = None,
        flusher: Flusher | None = None,
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
        # Writing straight to the transport needs both; either alone means a writer task.
        self._direct = direct if flusher is not None else None
        self._flusher = flusher
        # Whether the flusher has this subscriber in its list already.
        self._due = False
        self._closing: tuple[int, str] | None = None
        # Sending is allowed between start() and the end; _ended is only made
        # for those who wait for the end (see finished()).
        self._sending = False
        self._send_started = 0.0
        self._stalled = False
        self._over = False
        self._ended: asyncio.Future[None] | None = None
        self.name = name
        # Every subscription and what it guarantees (see relay.server.coverage).
        self.subscriptions: dict[SubscriptionKey, Coverage] = {}
        # Whether any subscription ever had a floor: only then is delivery checked.
        self._floored = False
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
        self._drop_queue()

    def _drop_queue(self) -> None:
        """Forget the outbox."""
        self._settle_marks()
        self._queue.clear()

    def _settle_marks(self) -> None:
        """The marks in the outbox will never be sent."""
        for item in self._queue:
            if isinstance(item, ReplayMark):
                item.settled()

    def _end(self) -> None:
        """Nothing more is sent: the connection was closed, broke or is stopped."""
        self._sending = False
        self._over = True
        self._settle_marks()
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(None)

    def cover(self, key: SubscriptionKey, live: Cuts | None) -> None:
        """Record a subscription; events above ``live`` will be routed to it live.

        Subscribing again keeps the guarantee made first, which still holds.
        """
        coverage = self.subscriptions.get(key)
        if coverage is None:
            self.subscriptions[key] = Coverage(live)
        elif coverage.live is None:
            coverage.live = live

    def deliver(self, item: Envelope | str) -> None:
        """Queue an event or a control frame; never blocks."""
        if self._closing is not None:
            return
        if self._floored and isinstance(item, Envelope) and below_floors(self.subscriptions, item):
            return
        queue = self._queue
        queue.append(item)
        if len(queue) > self._limit:
            self._conflate()
        self._wake()

    def hold(self, key: SubscriptionKey) -> ReplayMark:
        """Reserve the current end of the outbox for frames of ``key`` not known yet."""
        mark = ReplayMark(key)
        self._queue.append(mark)
        return mark

    def place(self, key: SubscriptionKey, items: list[Envelope | str], state: Cuts) -> None:
        """Queue a subscription's current state (latest events as of ``state``) as one item."""
        if self._closing is not None:
            return
        mark = ReplayMark(key)
        mark.items = items
        mark.state = state
        self._queue.append(mark)
        self._wake()

    def release(
        self,
        mark: ReplayMark,
        items: list[Envelope | str],
        *,
        lower_to: Cut | None = None,
        floor: Cut | None = None,
        state: Cut | None = None,
        settle: Settle | None = None,
    ) -> None:
        """Fill a reserved place; the writer sends these items, then what queued behind.

        ``lower_to``: the items are the subscription's whole history after that
        id. ``floor``: the client already has the subscription's events up to
        that id, so those queued behind the mark are dropped, and so are any
        delivered later (unless another subscription wants them). ``state``:
        the items are the latest events as of that id instead. ``settle`` is
        called once the writer has taken the items, or once they will never be
        sent.
        """
        mark.items = items
        mark.lower_to = lower_to
        mark.state = state
        mark.settle = settle
        queue = self._queue
        if self._over or self._closing is not None:
            mark.settled()
            return
        if settle is not None and mark in queue:
            # Items held behind another mark still being filled must not keep
            # their permit: that mark may be waiting for it.
            for item in queue[: queue.index(mark)]:
                if isinstance(item, ReplayMark) and item.items is None:
                    mark.settled()
                    break
        coverage = self.subscriptions.get(mark.key)
        if floor is not None and coverage is not None:
            coverage.floor = floor
            self._floored = True
            if mark in queue:
                behind = queue.index(mark) + 1
                subscriptions = self.subscriptions
                queue[behind:] = [
                    item
                    for item in queue[behind:]
                    if not (isinstance(item, Envelope) and below_floors(subscriptions, item))
                ]
        self._wake()

    def close_later(self, code: int, reason: str) -> None:
        """Ask the writer to close the connection once it gets to it."""
        if self._closing is None:
            self._closing = (code, reason)
            self._drop_queue()
            self._wake()

    def _wake(self) -> None:
        if self._writer is None and self._sending:
            if self._flusher is None:
                self._start_writer()
            elif not self._due:
                self._due = True
                self._flusher.add(self)

    def _start_writer(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._write())

    def flush(self) -> None:
        """Write the outbox straight to the transport, or start the writer if that would wait.

        Called by the :class:`Flusher`. The outbox goes out directly only when
        it holds no mark, nothing is closing, no writer is running and the
        transport takes bytes without waiting; otherwise the writer sends it.
        """
        self._due = False
        if self._writer is not None or not self._sending:
            return
        queue, direct = self._queue, self._direct
        if direct is None or self._closing is not None or not direct.writable():
            self._start_writer()
            return
        items: list[Envelope | str] = []
        for item in queue:
            if isinstance(item, ReplayMark):
                self._start_writer()
                return
            items.append(item)
        if not items:
            return
        data = direct.encode(items)
        count = len(items)
        queue.clear()
        try:
            direct.write(data)
        except (ConnectionError, RuntimeError) as exc:
            logger.debug("direct write to %s failed: %s", self.name, exc)
            self._end()
            return
        self.delivered += count

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
                frames.extend(render(placed) for placed in self._placed(item, item.items))
            else:
                frames.append(render(item))
            taken += 1
        del queue[:taken]
        return frames

    def _placed(self, mark: ReplayMark, items: list[Envelope | str]) -> list[Envelope | str]:
        """A mark's items the connection does not have yet; its guarantees count from here."""
        subscriptions = self.subscriptions
        fresh = uncovered(items, subscriptions)
        coverage = subscriptions.get(mark.key)
        if coverage is not None:
            if mark.lower_to is not None:
                coverage.lower(mark.lower_to, mark.key[0])
            if mark.state is not None:
                coverage.add_state(mark.state)
        mark.settled()
        return fresh

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

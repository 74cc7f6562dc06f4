"""What a new subscription receives before live events.

- With ``since``: every retained event after that id, then live events, with
  no gap and no duplicate between the two. The subscription is routed live at
  once, behind a :class:`~relay.server.subscriber.ReplayMark`; the history is read up
  to where live routing of the stream starts and put in the mark's place.
  ``recovered`` tells the client whether history reached back that far. Until
  the reader has started, nobody knows where that is: the replay waits for
  the start (up to ``replay_wait`` seconds, else ``recovered: false``). At
  most ``max_replays`` histories are read or held at once; the others wait.
- Without ``since``, for one session: its latest event, so a late joiner sees
  where the workflow is. For a type with ``snapshot``: the latest event of
  every active session of that type. Both go out as one outbox item.

A subscription narrowed to an owner (see :meth:`relay.server.auth.Grant.scope`)
gets only that owner's sessions, in its replay and its state as live.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from typing import NamedTuple

from redis.exceptions import RedisError

from relay.protocol.frames import ANY_TYPE, Envelope, Subscribe, error_frame, subscribed_frame
from relay.protocol.keys import Keys
from relay.protocol.stream_ids import START, StreamId
from relay.server.coverage import BEYOND, Cut, Cuts, cut_for
from relay.server.hub import Hub
from relay.server.ingest import decode
from relay.server.reader import StreamReader
from relay.server.session_view import SessionView
from relay.server.stream_store import StreamStore
from relay.server.subscriber import ReplayMark, Subscriber

logger = logging.getLogger(__name__)


class Replayed(NamedTuple):
    """What a replay puts in its mark's place, and what that guarantees the connection."""

    items: list[Envelope | str]
    # The whole history after this id is in ``items``.
    lower_to: Cut | None = None
    # The client already has the subscription's events up to this id.
    floor: Cut | None = None
    # ``items`` hold the latest events as of this id instead of the history.
    state: Cut | None = None


class StartCuts(Mapping[str, Cut]):
    """Per workflow type, where live routing began when the reader started.

    Until that is known every type answers :data:`BEYOND`, which claims nothing.
    """

    def __init__(self) -> None:
        self._cuts: dict[str, Cut] | None = None

    def fill(self, cuts: Mapping[str, Cut]) -> None:
        """Record the cuts, once the reader has started."""
        self._cuts = dict(cuts)

    def __getitem__(self, workflow_type: str) -> Cut:
        return BEYOND if self._cuts is None else self._cuts[workflow_type]

    def __iter__(self) -> Iterator[str]:
        return iter(self._cuts or ())

    def __len__(self) -> int:
        return len(self._cuts or ())


class CatchUp:
    """Subscribes a connection and sends it what it missed or the current state."""

    def __init__(
        self,
        *,
        hub: Hub,
        store: StreamStore,
        keys: Keys,
        reader: StreamReader,
        view: SessionView,
        replay_limit: int,
        max_replays: int,
        replay_wait: float,
    ) -> None:
        self._hub = hub
        self._store = store
        self._keys = keys
        self._reader = reader
        self._view = view
        self._replay_limit = replay_limit
        self._replay_wait = replay_wait
        self._permits = asyncio.Semaphore(max_replays)
        # Per workflow type, where live routing started when the reader started;
        # filled at that moment for the subscriptions made before it.
        self._start_cuts = StartCuts()
        self._start: asyncio.Task[None] | None = None
        self._followed_cache: tuple[tuple[int, int, int], Mapping[str, Cut]] | None = None
        self.replays = 0
        self.unrecovered = 0

    def subscribe(
        self, subscriber: Subscriber, frame: Subscribe, owner: str | None = None
    ) -> asyncio.Task[None] | None:
        """Subscribe (narrowed to ``owner``'s sessions, if given).

        Returns the replay task when history has to be fetched first.
        """
        key = frame.key
        live = self._live_cut(frame.workflow_type)
        if frame.since is not None:
            mark = subscriber.hold(key)
            self._hub.subscribe(subscriber, key, live, owner)
            return asyncio.get_running_loop().create_task(
                self._replay(subscriber, mark, frame, frame.since, live, owner)
            )
        state = self.current_state(frame, owner)
        if state:
            subscriber.place(key, [subscribed_frame(frame), *state], live)
        else:
            subscriber.deliver(subscribed_frame(frame))
        self._hub.subscribe(subscriber, key, live, owner)
        return None

    def current_state(self, frame: Subscribe, owner: str | None = None) -> list[Envelope]:
        """The latest event of the session, or of every active session with ``snapshot``.

        With ``owner``, of that owner's sessions only.

        Only events the reader has routed already: one this gateway published
        a moment ago is in the view before the reader reads it back, and
        would reach the new subscriber a second time, live.
        """
        wtype = frame.workflow_type
        if frame.session_id is not None:
            state = self._view.get(frame.session_id)
            if state is None or wtype not in (ANY_TYPE, state.workflow_type):
                return []
            if owner is not None and state.owner != owner:
                return []
            # A parent's latest event comes with its children's figures of now.
            return [self._view.latest(state)] if self._routed(state.latest) else []
        if not frame.snapshot:
            return []
        active = self._view.sessions(
            workflow_type=None if wtype == ANY_TYPE else wtype, owner=owner
        )
        return sorted(
            (
                self._view.latest(state)
                for state in active
                if not state.terminal and self._routed(state.latest)
            ),
            key=lambda envelope: envelope.key,
        )

    def _live_cut(self, workflow_type: str) -> Cuts:
        """Above which id (per type for ``*``) events reach a subscription made now live."""
        reader = self._reader
        if not reader.started.is_set():
            if self._start is None:
                self._start = asyncio.get_running_loop().create_task(self._note_start())
            return self._start_cuts
        if workflow_type == ANY_TYPE:
            return self._followed()
        upto = reader.live_from(self._keys.stream(workflow_type))
        return START if upto is None else upto

    def _followed(self) -> Mapping[str, Cut]:
        """Per followed type, where live routing is now; shared until the reader moves."""
        reader = self._reader
        version = (reader.entries_read, reader.restarts, len(reader.positions))
        cached = self._followed_cache
        if cached is not None and cached[0] == version:
            return cached[1]
        cuts: dict[str, Cut] = {}
        for stream in reader.positions:
            workflow_type = self._keys.workflow_type(stream)
            upto = reader.live_from(stream)
            if workflow_type is not None and upto is not None:
                cuts[workflow_type] = upto
        self._followed_cache = (version, cuts)
        return cuts

    async def _note_start(self) -> None:
        # Woken as the reader starts, before its first read comes back: what
        # live_from says now is exactly where live routing begins.
        await self._reader.started.wait()
        self._start_cuts.fill(self._followed())

    async def _started(self) -> bool:
        """Wait (bounded) until the reader has started and the start cuts are known."""
        start = self._start
        if start is None or start.done():
            return True
        try:
            await asyncio.wait_for(asyncio.shield(start), self._replay_wait)
        except TimeoutError:
            return False
        return True

    def _routed(self, envelope: Envelope) -> bool:
        position = self._reader.live_from(self._keys.stream(envelope.workflow_type))
        return position is not None and envelope.key <= position

    async def _replay(
        self,
        subscriber: Subscriber,
        mark: ReplayMark,
        frame: Subscribe,
        since: StreamId,
        live: Cuts,
        owner: str | None,
    ) -> None:
        self.replays += 1
        if not await self._started():
            self.unrecovered += 1
            logger.info("replay for %s: the stream reader has not started", subscriber.name)
            subscriber.release(mark, [subscribed_frame(frame, recovered=False)])
            return
        upto = cut_for(live, frame.workflow_type)
        permits = self._permits
        await permits.acquire()
        try:
            replayed = await self._items(subscriber, frame, since, upto, owner)
        except BaseException:
            permits.release()
            raise
        # The permit is held until the writer has taken the history from the mark.
        subscriber.release(
            mark,
            replayed.items,
            lower_to=replayed.lower_to,
            floor=replayed.floor,
            state=replayed.state,
            settle=permits.release,
        )

    async def _items(
        self,
        subscriber: Subscriber,
        frame: Subscribe,
        since: StreamId,
        upto: Cut,
        owner: str | None,
    ) -> Replayed:
        """What to put in the mark's place, and what that guarantees (see :class:`Replayed`)."""
        try:
            recovered, replayed = await self._history(frame, since, upto, owner)
        except (RedisError, OSError) as exc:
            logger.warning("replay for %s failed: %s", subscriber.name, exc)
            return Replayed(
                [
                    subscribed_frame(frame, recovered=False),
                    error_frame("unavailable", "history could not be read; refetch the state"),
                ]
            )
        items: list[Envelope | str] = [subscribed_frame(frame, recovered=recovered), *replayed]
        if not recovered:
            return Replayed(items, state=upto)
        # The reader has not got as far as the client: what it reads next
        # arrives live, so what the client already has is held back.
        return Replayed(items, lower_to=since, floor=since if upto < since else None)

    async def _history(
        self, frame: Subscribe, since: StreamId, upto: Cut, owner: str | None
    ) -> tuple[bool, list[Envelope]]:
        """Whether history reaches back to ``since``, and what to send in its place."""
        stream = self._keys.stream(frame.workflow_type)
        recovered = await self._store.reaches_back_to(stream, since)
        # With upto at START the stream is not followed here yet: all of it
        # will arrive live, so there is no history to read.
        if recovered and since < upto:
            limit = self._replay_limit
            entries = await self._store.history(stream, since, upto, limit + 1)
            if len(entries) <= limit:
                return True, [
                    envelope
                    for envelope, _ in decode(frame.workflow_type, entries, self._view)
                    if frame.session_id in (None, envelope.session_id)
                    and owner in (None, envelope.owner)
                ]
            recovered = False
        if recovered:
            return True, []
        self.unrecovered += 1
        # The current state instead, as of what was routed before the mark.
        return False, [e for e in self.current_state(frame, owner) if e.key <= upto]

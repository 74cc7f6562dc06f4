"""What a new subscription receives before live events.

- With ``since``: every retained event after that id, then live events, with
  no gap and no duplicate between the two. The subscription is routed live at
  once, behind a :class:`~relay.subscriber.ReplayMark`; the history is read up
  to where live routing of the stream starts and put in the mark's place.
  ``recovered`` tells the client whether history reached back that far.
- Without ``since``, for one session: its latest event, so a late joiner sees
  where the workflow is. For a type with ``snapshot``: the latest event of
  every active session of that type.
"""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

from relay.frames import Subscribe, error_frame, subscribed_frame
from relay.hub import ANY_TYPE, Hub
from relay.ingest import decode
from relay.keys import Keys
from relay.models import Envelope, parse_stream_id
from relay.reader import StreamReader
from relay.sessions import SessionView
from relay.streams import StreamStore
from relay.subscriber import ReplayMark, Subscriber

logger = logging.getLogger(__name__)


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
    ) -> None:
        self._hub = hub
        self._store = store
        self._keys = keys
        self._reader = reader
        self._view = view
        self._replay_limit = replay_limit
        self.replays = 0
        self.unrecovered = 0

    def subscribe(self, subscriber: Subscriber, frame: Subscribe) -> asyncio.Task[None] | None:
        """Subscribe; returns the replay task when history has to be fetched first."""
        if frame.since is not None:
            mark = subscriber.hold()
            upto = self._reader.live_from(self._keys.stream(frame.workflow_type))
            self._hub.subscribe(subscriber, frame.key)
            return asyncio.get_running_loop().create_task(
                self._replay(subscriber, mark, frame, frame.since, upto)
            )
        subscriber.deliver(subscribed_frame(frame))
        for envelope in self.current_state(frame):
            subscriber.deliver(envelope)
        self._hub.subscribe(subscriber, frame.key)
        return None

    def current_state(self, frame: Subscribe) -> list[Envelope]:
        """The latest event of the session, or of every active session with ``snapshot``.

        Only events the reader has routed already: one this gateway published
        a moment ago is in the view before the reader reads it back, and
        would reach the new subscriber a second time, live.
        """
        wtype = frame.workflow_type
        if frame.session_id is not None:
            state = self._view.get(frame.session_id)
            if state is None or wtype not in (ANY_TYPE, state.workflow_type):
                return []
            return [state.latest] if self._routed(state.latest) else []
        if not frame.snapshot:
            return []
        active = self._view.sessions(workflow_type=None if wtype == ANY_TYPE else wtype)
        return sorted(
            (state.latest for state in active if not state.terminal and self._routed(state.latest)),
            key=lambda envelope: envelope.key,
        )

    def _routed(self, envelope: Envelope) -> bool:
        position = self._reader.live_from(self._keys.stream(envelope.workflow_type))
        return position is not None and envelope.key <= parse_stream_id(position)

    async def _replay(
        self,
        subscriber: Subscriber,
        mark: ReplayMark,
        frame: Subscribe,
        since: str,
        upto: str | None,
    ) -> None:
        self.replays += 1
        floor: tuple[str, tuple[int, int]] | None = None
        try:
            recovered, replayed = await self._history(frame, since, upto)
        except (RedisError, OSError) as exc:
            logger.warning("replay for %s failed: %s", subscriber.name, exc)
            items: list[Envelope | str] = [
                subscribed_frame(frame, recovered=False),
                error_frame("unavailable", "history could not be read; refetch the state"),
            ]
        else:
            items = [subscribed_frame(frame, recovered=recovered), *replayed]
            since_key = parse_stream_id(since)
            if recovered and (upto is None or parse_stream_id(upto) < since_key):
                # The reader has not got as far as the client: what it reads
                # next arrives live, so what the client already has is held back.
                floor = (frame.workflow_type, since_key)
        subscriber.release(mark, items, floor)

    async def _history(
        self, frame: Subscribe, since: str, upto: str | None
    ) -> tuple[bool, list[Envelope]]:
        """Whether history reaches back to ``since``, and what to send in its place."""
        stream = self._keys.stream(frame.workflow_type)
        recovered = await self._store.reaches_back_to(stream, since)
        if upto is None:
            # Not followed here yet: the whole stream will arrive live.
            self.unrecovered += not recovered
            return recovered, []
        if recovered and parse_stream_id(since) < parse_stream_id(upto):
            limit = self._replay_limit
            entries = await self._store.history(stream, since, upto, limit + 1)
            if len(entries) <= limit:
                return True, [
                    envelope
                    for envelope, _ in decode(frame.workflow_type, entries)
                    if frame.session_id in (None, envelope.session_id)
                ]
            recovered = False
        if recovered:
            return True, []
        self.unrecovered += 1
        # The current state instead, as of what was routed before the mark.
        upto_key = parse_stream_id(upto)
        return False, [e for e in self.current_state(frame) if e.key <= upto_key]

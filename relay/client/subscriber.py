"""Following a gateway from Python: ``async for update in watch(url, ...)``.

:func:`watch` subscribes over the gateway's WebSocket and yields each event as
an :class:`Update`, reconnecting by itself with exponential backoff and
resuming from the last id seen, so a dropped connection or a restarted
gateway costs nothing and repeats nothing.

It needs aiohttp, which a worker's install leaves out: importing this module
without it raises ModuleNotFoundError naming the extra to install.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from pydantic import ValidationError

from relay.protocol.children import family_in
from relay.protocol.event import ProgressEvent, event_from_data
from relay.protocol.frames import ANY_TYPE, CLOSE_TOKEN_EXPIRED, CLOSE_UNAUTHORIZED
from relay.protocol.plans import PlanPosition, position_in
from relay.protocol.stream_ids import StreamId

try:
    import aiohttp
except ModuleNotFoundError as exc:
    raise ModuleNotFoundError(
        "relay.client.subscriber needs aiohttp: pip install 'relay-progress[server]'",
        name=exc.name,
    ) from exc

logger = logging.getLogger(__name__)

# Seconds before the first reconnect; each failed attempt doubles it, up to the cap.
RECONNECT_START = 0.2
RECONNECT_CAP = 5.0
# Seconds between the client's WebSocket pings, so a dead peer is noticed.
HEARTBEAT = 30.0

State = Literal["connecting", "live", "disconnected", "error"]
TokenSource = Callable[[], str | Awaitable[str | None] | None]


class TokenRefused(Exception):
    """The gateway wants a token and was given none, a bad one, or (``expired``) an old one."""

    def __init__(self, *, expired: bool) -> None:
        super().__init__("token expired" if expired else "authentication required")
        self.expired = expired


@dataclass(frozen=True, slots=True)
class Update:
    """One event as the gateway delivered it: its stream id, the event, and its place in a plan.

    ``position`` is the gateway's figure for a session with a plan (see
    :mod:`relay.protocol.plans`), None for one without; ``family`` the
    figures it added about the session's children or parent (see
    :func:`relay.protocol.children.family_in`), empty for most events.
    """

    id: StreamId
    event: ProgressEvent
    position: PlanPosition | None = None
    family: dict[str, int | float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Connection:
    """A change of the subscription's connection, as ``on_state`` hears it.

    ``connecting`` before each attempt; ``live`` once the gateway confirmed
    the subscription (``recovered`` is False when history no longer reached
    back to the resume point, so events were missed); ``disconnected`` with
    ``retry_in`` seconds before the next attempt; ``error`` when the gateway
    refused a frame (``message`` says why) and the connection stays open.
    """

    state: State
    retry_in: float | None = None
    recovered: bool | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class Reset:
    """The gateway's word that ``workflow_type``'s history was lost or rewritten."""

    workflow_type: str
    message: str


def ws_url(gateway: str) -> str:
    """The WebSocket address of a gateway given by its HTTP address."""
    base = gateway.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :] + "/ws"
    if base.startswith("http://"):
        return "ws://" + base[len("http://") :] + "/ws"
    return base + "/ws"


def frame_items(text: str) -> Iterator[dict[str, Any]]:
    """The JSON objects of one server message, which may carry an array of them.

    A message that is not JSON yields nothing (logged at debug level).
    """
    try:
        decoded = orjson.loads(text)
    except orjson.JSONDecodeError:
        logger.debug("skipped a message that is not JSON (%d characters)", len(text))
        return
    for item in decoded if isinstance(decoded, list) else [decoded]:
        if isinstance(item, dict):
            yield item


def parse_update(frame: dict[str, Any]) -> Update | None:
    """The update an event frame carries, or None (logged at debug level) when it is invalid."""
    try:
        data = frame.get("data")
        return Update(
            id=StreamId.parse(str(frame.get("id"))),
            event=event_from_data(data),
            position=position_in(data) if isinstance(data, dict) else None,
            family=family_in(data) if isinstance(data, dict) else {},
        )
    except (ValueError, ValidationError) as exc:
        logger.debug("skipped an invalid event frame %r: %s", frame.get("id"), exc)
        return None


async def _fetch_token(get_token: TokenSource) -> str | None:
    token = get_token()
    if inspect.isawaitable(token):
        return await token
    return token


def _send(ws: aiohttp.ClientWebSocketResponse, frame: dict[str, Any]) -> Awaitable[None]:
    return ws.send_str(orjson.dumps(frame).decode())


class _Resume:
    """Where a subscription stands: what to ask for on connecting, and what is news."""

    def __init__(self, workflow_type: str, session_id: str | None, snapshot: bool) -> None:
        self.target: dict[str, Any] = {"action": "subscribe", "workflow_type": workflow_type}
        if session_id is not None:
            self.target["session_id"] = session_id
        self.snapshot = snapshot
        # The last id yielded per workflow type: the resume point of a one-type subscription.
        self.last_ids: dict[str, StreamId] = {}
        # Ids up to these were yielded before what the gateway sends now began:
        # a snapshot holds them again, and they are not news.
        self.marks: dict[str, StreamId] = {}

    def subscribe(self) -> dict[str, Any]:
        """The subscribe frame of a new connection: resuming where it can, else a snapshot."""
        self.marks = dict(self.last_ids)
        workflow_type = self.target["workflow_type"]
        resume_from = self.last_ids.get(workflow_type)
        if resume_from is not None and workflow_type != ANY_TYPE:
            return {**self.target, "since": str(resume_from)}
        return {**self.target, "snapshot": True} if self.snapshot else dict(self.target)

    def reset(self, workflow_type: str) -> dict[str, Any] | None:
        """Forget ``workflow_type``'s ids; the frame asking for the state again, if wanted."""
        self.last_ids.pop(workflow_type, None)
        self.marks = dict(self.last_ids)
        return {**self.target, "snapshot": True} if self.snapshot else None

    def news(self, update: Update) -> bool:
        """Whether ``update`` is new, noting its id if so."""
        kind = update.event.workflow_type
        mark = self.marks.get(kind)
        if mark is not None and update.id <= mark:
            return False
        self.last_ids[kind] = max(update.id, self.last_ids.get(kind, update.id))
        return True


async def watch(
    url: str,
    *,
    workflow_type: str = ANY_TYPE,
    session_id: str | None = None,
    token: str | None = None,
    get_token: TokenSource | None = None,
    snapshot: bool = False,
    on_state: Callable[[Connection], None] | None = None,
    on_reset: Callable[[Reset], None] | None = None,
) -> AsyncGenerator[Update, None]:
    """Yield every event of a subscription to the gateway at ``url``, for as long as it is iterated.

    ``url`` is the gateway's HTTP address (``http://host:port``) or its
    WebSocket one. ``workflow_type`` (``*`` for all) and ``session_id`` say
    what to follow; ``token`` is the subscriber token where auth is on, or
    ``get_token``, a plain or async function, gives one on every connect, so
    a token can be renewed: when the gateway closes for an expired token, a
    fresh one is asked for and tried before giving up.

    After each reconnect the subscription resumes from the last id seen, so
    nothing is missed or repeated (``*`` cannot resume: events published while
    disconnected are missed, and none is yielded twice). With ``snapshot`` a
    subscription that does not resume starts with the latest event of every
    session still running. A frame that is not a valid event is skipped.

    The iterator yields events only; what happens to the connection goes to
    callbacks, called synchronously, so a loop over events needs no type
    checks: ``on_state`` hears each :class:`Connection` change, ``on_reset``
    each :class:`Reset`. After a reset ids seen before mean nothing: the
    resume point is dropped and, with ``snapshot``, the latest events are
    asked for again.

    Raises :class:`TokenRefused` when the gateway closes with 4001 or 4002
    (after a refresh, with ``get_token``) or answers the upgrade with 401.
    Leaving the loop early leaves the connection open until the generator is
    closed: use ``contextlib.aclosing(watch(...))`` to close it at once.
    """

    def state(change: Connection) -> None:
        if on_state is not None:
            on_state(change)

    resume = _Resume(workflow_type, session_id, snapshot)
    delay = RECONNECT_START
    refreshed = False
    async with aiohttp.ClientSession() as http:
        while True:
            state(Connection("connecting"))
            try:
                current = await _fetch_token(get_token) if get_token is not None else token
                async with http.ws_connect(ws_url(url), heartbeat=HEARTBEAT) as ws:
                    if current:
                        await _send(ws, {"action": "auth", "token": current})
                    await _send(ws, resume.subscribe())
                    async for message in ws:
                        if message.type is not aiohttp.WSMsgType.TEXT:
                            continue
                        for item in frame_items(message.data):
                            if "event" not in item:
                                if item.get("type") == "subscribed":
                                    delay, refreshed = RECONNECT_START, False
                                    state(Connection("live", recovered=item.get("recovered")))
                                elif item.get("type") == "reset":
                                    reset = Reset(
                                        str(item.get("workflow_type")),
                                        str(item.get("message", "history was reset")),
                                    )
                                    again = resume.reset(reset.workflow_type)
                                    if on_reset is not None:
                                        on_reset(reset)
                                    if again is not None:
                                        await _send(ws, again)
                                elif item.get("type") == "error":
                                    state(Connection("error", message=str(item.get("message"))))
                                continue
                            update = parse_update(item)
                            if update is not None and resume.news(update):
                                yield update
                if ws.close_code == CLOSE_UNAUTHORIZED:
                    raise TokenRefused(expired=False)
                if ws.close_code == CLOSE_TOKEN_EXPIRED:
                    if get_token is None or refreshed:
                        raise TokenRefused(expired=True)
                    # Try once more at once, with a token asked for afresh.
                    refreshed = True
                    continue
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status == 401:
                    raise TokenRefused(expired=False) from None
                logger.debug("watch connection refused: %s", exc)
            except (aiohttp.ClientError, OSError) as exc:
                logger.debug("watch connection lost: %s", exc)
            state(Connection("disconnected", retry_in=delay))
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_CAP)

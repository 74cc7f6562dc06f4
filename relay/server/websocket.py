"""The WebSocket endpoint: authentication, subscriptions in, event frames out."""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import WSMessage, WSMsgType, web
from pydantic import ValidationError
from redis.exceptions import RedisError

from relay.protocol.event import MalformedJson, validation_detail
from relay.protocol.frames import (
    CLOSE_TOKEN_EXPIRED,
    CLOSE_UNAUTHORIZED,
    PONG_FRAME,
    Auth,
    Cancel,
    Ping,
    Subscribe,
    SubscriptionTarget,
    Unsubscribe,
    authenticated_frame,
    cancel_requested_frame,
    error_frame,
    parse_client_frame,
    unsubscribed_frame,
)
from relay.server.auth import AuthError, Grant
from relay.server.client_address import client_address
from relay.server.cors import check_origin
from relay.server.errors import ApiError, streaming
from relay.server.frame_sink import FrameSink
from relay.server.gateway import GATEWAY, Gateway
from relay.server.guards import (
    anonymous_grant,
    check_cancel,
    check_capacity,
    check_subscription,
    query_subscription,
    refusal,
    token_of,
    verify_token,
)
from relay.server.publishing import request_cancel
from relay.server.rate_limits import FloodWindow, TokenBucket
from relay.server.subscriber import CLOSE_GOING_AWAY, Subscriber

logger = logging.getLogger(__name__)

CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009

# Seconds over which dropped frames are counted. A client is closed once it
# has had more frames dropped within one window than it may send in that time
# (RELAY_WS_RATE times the window, plus RELAY_WS_BURST): it sends more than
# twice its allowance. It gets one rate_limited error frame per window.
FLOOD_WINDOW = 5.0
# Seconds a close the gateway starts may take: our close frame out, the client's back.
CLOSE_TIMEOUT = 5.0

# An unmasked ping frame with no payload (RFC 6455, 5.5.2), as a server sends it.
PING = b"\x89\x00"
_PING_PONG = frozenset((WSMsgType.PING, WSMsgType.PONG))
# What ws.receive() answers once the connection is over (as ``async for`` ends on).
ENDS = frozenset((WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED))

routes = web.RouteTableDef()


class Connection:
    """One WebSocket client's session with the hub."""

    __slots__ = (
        "_expiry",
        "_flood",
        "_pinged",
        "_rate",
        "_transport",
        "closing",
        "gateway",
        "grant",
        "subscriber",
        "tasks",
        "ws",
    )

    def __init__(
        self,
        gateway: Gateway,
        ws: web.WebSocketResponse,
        name: str,
        direct: FrameSink | None = None,
        transport: asyncio.Transport | None = None,
    ) -> None:
        self.gateway = gateway
        self.ws = ws
        # Where heartbeat pings are written (see beat()); None once the peer has gone.
        self._transport = transport
        # Whether the last ping is still unanswered: nothing came from the client since.
        self._pinged = False
        # Cancel requests in flight; made on first use, most connections never have one.
        self.tasks: set[asyncio.Task[None]] | None = None
        settings = gateway.settings
        # None until a token is accepted, when the gateway requires one.
        self.grant: Grant | None = anonymous_grant(settings) if settings.secret is None else None
        self._expiry: asyncio.TimerHandle | None = None
        # Made on the first client frame: a bucket starts full, and one made at
        # connect time would be full by then too, so waiting changes nothing.
        self._rate: TokenBucket | None = None
        # Made on the first dropped frame; most connections never have one.
        self._flood: FloodWindow | None = None
        # Set once the gateway decided to close; nothing the client sends counts after.
        self.closing = False
        self.subscriber = Subscriber(
            ws.send_str,
            self._close,
            limit=gateway.settings.outbox_limit,
            send_timeout=gateway.settings.send_timeout,
            name=name,
            direct=direct,
            flusher=None if direct is None else gateway.hub.flusher,
        )

    async def _close(self, code: int, reason: str) -> None:
        await self.ws.close(code=code, message=reason.encode())

    def close_later(self, code: int, reason: str) -> None:
        """Close the connection with ``code``; frames the client sends from now on are ignored."""
        self.closing = True
        self.subscriber.close_later(code, reason)

    def error(self, code: str, message: str, detail: list[dict[str, str]] | None = None) -> None:
        """Send an error frame (counted like HTTP rejections); the connection stays open."""
        self.gateway.stats.reject(code)
        self.subscriber.deliver(error_frame(code, message, detail))

    def authenticate(self, token: str) -> bool:
        """Accept a token, or close the connection with a clear code; True if accepted.

        A token presented again replaces the grant: subscriptions outside the
        new one are dropped, each with an ``unsubscribed`` frame.
        """
        settings = self.gateway.settings
        if settings.secret is None:
            return True
        try:
            grant = verify_token(settings, token)
        except AuthError as exc:
            code = CLOSE_TOKEN_EXPIRED if exc.expired else CLOSE_UNAUTHORIZED
            self.close_later(code, str(exc)[:120])
            return False
        self.grant = grant
        self._narrow_to(grant)
        if self._expiry is not None:
            self._expiry.cancel()
        if grant.expires_at is not None:
            # The connection lives no longer than its token.
            delay = max(grant.expires_at - time.time(), 0)
            self._expiry = asyncio.get_running_loop().call_later(
                delay, self.close_later, CLOSE_TOKEN_EXPIRED, "token expired"
            )
        return True

    def _narrow_to(self, grant: Grant) -> None:
        # A swapped token must not keep what only the previous one covered.
        subscriber = self.subscriber
        hub = self.gateway.hub
        for workflow_type, session_id in list(subscriber.subscriptions):
            # One narrowed to an owner stays if the new token owns that owner's sessions.
            scope = hub.scope(subscriber, (workflow_type, session_id))
            if grant.allows(workflow_type, session_id, scope):
                continue
            hub.unsubscribe(subscriber, (workflow_type, session_id))
            target = SubscriptionTarget(workflow_type=workflow_type, session_id=session_id)
            subscriber.deliver(unsubscribed_frame(target))

    def expect_token(self, within: float) -> None:
        """Close the connection unless a token is accepted ``within`` seconds from now."""
        if self.grant is None:
            self._expiry = asyncio.get_running_loop().call_later(within, self._auth_deadline)

    def _auth_deadline(self) -> None:
        if self.grant is None:
            self.close_later(CLOSE_UNAUTHORIZED, "authentication timed out")

    def admit(self) -> bool:
        """Whether the client is within its frame rate; see FLOOD_WINDOW for a flood."""
        settings = self.gateway.settings
        if self._rate is None:
            self._rate = TokenBucket(settings.ws_rate, settings.ws_burst)
        if self._rate.take():
            return True
        if self._flood is None:
            self._flood = FloodWindow(FLOOD_WINDOW)
        dropped = self._flood.drop()
        if dropped == 1:
            self.error("rate_limited", "too many frames; this one and those after it are dropped")
        elif dropped > settings.ws_rate * FLOOD_WINDOW + settings.ws_burst:
            self.close_later(CLOSE_POLICY, "message rate exceeded")
        return False

    def beat(self) -> None:
        """Ping the client, or close the connection if it has not answered the last ping.

        The gateway calls this every ``ws_heartbeat`` seconds for every
        connection (see :func:`ping_all`), rather than aiohttp keeping a timer
        per connection. The ping frame is written straight to the transport:
        the write never waits, so one stalled client cannot hold up the
        others, and a frame is only ever written whole, so it cannot land
        inside another.
        """
        transport = self._transport
        if self.closing or self.ws.closed or transport is None or transport.is_closing():
            return
        if self._pinged:
            self.close_later(CLOSE_GOING_AWAY, "no answer to ping")
            return
        self._pinged = True
        transport.write(PING)

    def take(self, message: WSMessage) -> None:
        """Act on one message of the client if it is within its frame rate.

        Whatever the client sends answers the heartbeat; pings and pongs are
        not counted against the rate (the handler answers pings).
        """
        self._pinged = False
        if message.type not in _PING_PONG and self.admit():
            self.receive(message)

    def receive(self, message: WSMessage) -> None:
        """Act on one message from the client."""
        if message.type is WSMsgType.TEXT:
            self.handle_text(message.data)
        elif message.type is WSMsgType.BINARY:
            self.error("invalid_message", "binary frames are not accepted, use text")
        elif message.type is WSMsgType.ERROR:
            # aiohttp has already closed the socket (1009 for an oversize frame).
            too_big = getattr(message.data, "code", None) == CLOSE_TOO_BIG
            self.gateway.stats.reject("frame_too_large" if too_big else "bad_frame")

    def handle_text(self, text: str) -> None:
        """Act on one client frame."""
        try:
            frame = parse_client_frame(text)
        except MalformedJson as exc:
            self.error("invalid_message", f"frame is not valid JSON: {exc}")
            return
        except ValidationError as exc:
            detail = validation_detail(exc)
            self.error("invalid_message", "frame is not a valid action", detail)
            return
        if isinstance(frame, Auth):
            if self.authenticate(frame.token) and self.grant is not None:
                self.subscriber.deliver(authenticated_frame(self.grant.subject))
            return
        if self.grant is None:
            self.close_later(CLOSE_UNAUTHORIZED, "authentication required")
            return
        if isinstance(frame, Subscribe):
            self.subscribe(frame)
        elif isinstance(frame, Unsubscribe):
            self.unsubscribe(frame)
        elif isinstance(frame, Cancel):
            cancel = self.cancel(self.grant, frame.session_id)
            self._track(asyncio.get_running_loop().create_task(cancel))
        elif isinstance(frame, Ping):
            self.subscriber.deliver(PONG_FRAME)

    def _track(self, task: asyncio.Task[None]) -> None:
        if self.tasks is None:
            self.tasks = set()
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def end(self) -> None:
        """Forget the connection, then stop what still runs for it."""
        # Forgotten before awaiting anything: the handler may be cancelled
        # here when the peer has already gone.
        gateway = self.gateway
        gateway.hub.detach(self.subscriber)
        gateway.sockets.discard(self)
        logger.info("%s disconnected (close code %s)", self.subscriber.name, self.ws.close_code)
        await self.stop()

    async def stop(self) -> None:
        """Cancel work still running for this connection and stop its writer."""
        if self._expiry is not None:
            self._expiry.cancel()
        if self.tasks:
            for task in self.tasks:
                task.cancel()
            await asyncio.wait(self.tasks)
        await self.subscriber.stop()

    async def cancel(self, grant: Grant, session_id: str) -> None:
        """Publish a cancellation request if ``grant`` allows it; tell the client how it went.

        See relay.server.guards.check_cancel: a token with the cancel claim covering
        the session, or development mode.
        """
        try:
            check_cancel(grant, self.gateway.view.get(session_id), session_id)
            outcome = await request_cancel(self.gateway, session_id)
        except ApiError as exc:
            self.error(exc.code, exc.message)
        except (RedisError, OSError):
            self.error("unavailable", "the store is unavailable, try again")
        else:
            frame = cancel_requested_frame(session_id, outcome.receipt.id, outcome.children)
            self.subscriber.deliver(frame)

    def subscribe(self, frame: Subscribe) -> None:
        """Route the frame's target to this client from now on."""
        subscriber = self.subscriber
        limit = self.gateway.settings.max_subscriptions
        try:
            owner = check_subscription(self.grant, subscriber.subscriptions, frame, limit)
        except ApiError as exc:
            self.error(exc.code, exc.message)
            return
        replay = self.gateway.catchup.subscribe(subscriber, frame, owner)
        if replay is not None:
            self._track(replay)

    def unsubscribe(self, frame: Unsubscribe) -> None:
        """Stop routing the frame's target to this client."""
        if self.gateway.hub.unsubscribe(self.subscriber, frame.key):
            self.subscriber.deliver(unsubscribed_frame(frame))
        else:
            self.error("not_subscribed", "there is no such subscription on this connection")


def ping_all(gateway: Gateway) -> None:
    """One heartbeat for every WebSocket connection of ``gateway``; see Connection.beat."""
    for connection in list(gateway.sockets):
        connection.beat()


def drop_http_parser(request: web.Request) -> None:
    """Let go of the HTTP parser of a connection upgraded to a WebSocket.

    aiohttp keeps the connection's HTTP request parser (more than 1 KiB of
    RSS) for as long as the connection lasts, though once the upgrade is done
    every byte goes to the WebSocket reader, and pausing reading no longer
    touches the parser; it handles a parser of None (as after the connection
    is lost). These are aiohttp's own attributes:
    tests/server/test_websocket_memory.py fails if they change.
    """
    protocol = request.protocol
    if protocol._upgraded and protocol._payload_parser is not None:
        protocol._parser = None


def _admit(request: web.Request) -> Subscribe | None:
    """Checks before the upgrade; the subscription in the query string, if any."""
    check_origin(request)
    check_capacity(request)
    return query_subscription({k: v for k, v in request.query.items() if k != "token"})


@routes.get("/ws")
@streaming
async def websocket(request: web.Request) -> web.StreamResponse:
    """Upgrade to a WebSocket, then act on client frames until either side closes it.

    A token and a subscription may come in the query string. The loop is the
    handler's own, and calls ws.receive() rather than iterating: every frame
    more (a method's, the iterator's) would stay alive, in memory, for as
    long as the connection is idle. Once the gateway decides to close,
    reading stops here: the close handshake (our close frame out, the
    client's back) is then the only reader, so whatever the client sends
    meanwhile cannot race the close code, and the handler waits for that
    handshake to end.
    """
    connection = await _open(request)
    if not isinstance(connection, Connection):
        return connection
    ws = connection.ws
    try:
        while not connection.closing:
            message = await ws.receive()
            if message.type in ENDS:
                break
            if message.type is WSMsgType.PING:
                await ws.pong(message.data)
            connection.take(message)
        if connection.closing:
            await connection.subscriber.finished(CLOSE_TIMEOUT)
    finally:
        await connection.end()
    return ws


async def _open(request: web.Request) -> Connection | web.StreamResponse:
    """The upgrade, authentication and the query's subscription; a refusal instead if any.

    Apart from the handler, so that what only the handshake needs (the
    parsed subscription, the token, the settings) is not kept alive by its
    frame for as long as the connection lasts.
    """
    gateway = request.app[GATEWAY]
    try:
        initial = _admit(request)
    except ApiError as error:
        return refusal(request, error)
    settings = gateway.settings
    ws = web.WebSocketResponse(
        timeout=CLOSE_TIMEOUT,
        compress=False,
        max_msg_size=settings.max_ws_frame_bytes,
        # Pings and pongs come to the handler: the heartbeat is the gateway's (ping_all).
        autoping=False,
    )
    await ws.prepare(request)
    drop_http_parser(request)
    name = f"ws:{client_address(request, settings.proxies)}"
    connection = Connection(gateway, ws, name, FrameSink.of(request, ws), request.transport)
    gateway.sockets.add(connection)
    gateway.hub.attach(connection.subscriber)
    connection.subscriber.start()
    logger.info("%s connected", name)
    try:
        token = token_of(request)
        if token is not None:
            connection.authenticate(token)
        connection.expect_token(settings.auth_timeout)
        if initial is not None and not connection.closing:
            if connection.grant is None:
                # A subscription in the query needs the token in the query too.
                connection.close_later(CLOSE_UNAUTHORIZED, "authentication required")
            else:
                connection.subscribe(initial)
    except BaseException:
        await connection.end()
        raise
    return connection

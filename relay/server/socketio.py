"""The Socket.IO endpoint, ``/socket.io/``: Engine.IO v4 sessions riding on the hub.

An unchanged ``socket.io-client`` 4.x connects with HTTP long-polling and
upgrades to a WebSocket, or opens a WebSocket at once. Each Engine.IO
session is one :class:`~relay.server.subscriber.Subscriber` whose items are
rendered as Socket.IO packets: an event becomes
``42["workflow:progress:<type>",<data>]``, a control frame
(``subscribed``, ``error``, ...) an event named after its ``type``. Every
packet the server sends goes through that outbox, pings and the CONNECT
answer included, so the order is kept across the upgrade and a client that
reads nothing is conflated and dropped like any other subscriber.

A polling session lives in the gateway that made it: the client's requests
must all reach that gateway (sticky sessions behind a load balancer).

Connection state recovery: every event ends with the connection's offset
(see :class:`~relay.server.socketio_protocol.Offset`), which the client sends
back with the pid of its CONNECT answer when it reconnects. Any gateway,
restarted or another one, resumes every type from that offset with
``since``, so nothing of a connection is kept on the server.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import time
from typing import Any

import orjson
from aiohttp import WSMsgType, web
from pydantic import ValidationError
from redis.exceptions import RedisError

from relay.protocol.entries import now_ms
from relay.protocol.event import MalformedJson
from relay.protocol.frames import (
    ANY_TYPE,
    Envelope,
    Subscribe,
    SubscriptionKey,
    Unsubscribe,
    error_frame,
    parse_client_frame,
    subscribed_frame,
    unsubscribed_frame,
    websocket_text_frame,
)
from relay.protocol.keys import event_name
from relay.protocol.stream_ids import START, STREAM_ID_PART_MAX, StreamId
from relay.server import socketio_protocol as sio
from relay.server.auth import AuthError, Grant
from relay.server.client_address import client_address
from relay.server.cors import check_origin
from relay.server.errors import ApiError, streaming
from relay.server.frame_sink import FrameSink
from relay.server.gateway import GATEWAY, Gateway
from relay.server.guards import (
    anonymous_grant,
    check_capacity,
    check_subscription,
    refusal,
    verify_token,
)
from relay.server.subscriber import CLOSE_GOING_AWAY, Subscriber
from relay.server.websocket import ENDS, drop_http_parser

logger = logging.getLogger(__name__)

PATH = "/socket.io/"
TRANSPORTS = ("polling", "websocket")
# Seconds a close the gateway starts may take on a WebSocket.
CLOSE_TIMEOUT = 5.0

routes = web.RouteTableDef()


def render(item: Envelope | str, offset: sio.Offset) -> str:
    """One outbox item as the Engine.IO packet carrying it.

    Relay's control frames are JSON objects and become events named after
    their ``type``; anything else in the outbox is an Engine.IO packet
    already. Every event ends with ``offset``, the connection's resume
    position, which socket.io-client keeps and sends back when it reconnects.
    """
    if isinstance(item, Envelope):
        return sio.event_packet(event_name(item.workflow_type), item.data_json, offset.encode())
    if item.startswith("{"):
        return sio.event_packet(orjson.loads(item)["type"], item, offset.encode())
    return item


def _event_head(envelope: Envelope) -> bytes:
    """An event's packet up to the connection's offset (see :func:`sio.event_head`)."""
    name = event_name(envelope.workflow_type)
    return sio.event_head(name, envelope.data_json).encode()


def new_sid() -> str:
    """A fresh Engine.IO sid, naming the gateway that holds the session.

    Polling requests carry the sid, and only the gateway that made the session
    knows it: a load balancer in front of several gateways must send them all
    there. In a Docker container the hostname is the container's short id
    (12 hex digits), which Docker's DNS resolves on the container's networks,
    so the sid starts with it and a dot (no character of the random part),
    and a proxy can route by it (deploy/nginx.conf) with no table of its own.
    Any other hostname is left out: it is not known to resolve, and could say
    more about the host than a client needs to know.
    """
    host = socket.gethostname()
    owned = len(host) == 12 and all(c in "0123456789abcdef" for c in host)
    return f"{host}.{_new_id()}" if owned else _new_id()


class Sessions:
    """The Engine.IO sessions of one gateway, by sid."""

    def __init__(self) -> None:
        self.by_sid: dict[str, EngineSession] = {}
        # Subscribers of closed sessions still being stopped.
        self.stopping: set[asyncio.Task[None]] = set()


SESSIONS = web.AppKey("socketio_sessions", Sessions)


class EngineSession:
    """One Engine.IO session and the Socket.IO connection to ``/`` it may hold."""

    __slots__ = (
        "_drained",
        "_expiry",
        "_offset",
        "_pinged_at",
        "_poll",
        "_sink",
        "buffer",
        "closed",
        "gateway",
        "grant",
        "own_subscriptions",
        "posting",
        "sessions",
        "sid",
        "subscriber",
        "tasks",
        "token",
        "upgrading",
        "ws",
    )

    def __init__(self, gateway: Gateway, sessions: Sessions, name: str, token: str | None) -> None:
        self.gateway = gateway
        self.sessions = sessions
        self.sid = new_sid()
        # The token of the handshake's query string, for a CONNECT without one.
        self.token = token
        # Set once the client is connected to the main namespace.
        self.grant: Grant | None = None
        # Whether the client has made a subscription of its own (which drops the default ones).
        self.own_subscriptions = False
        # Packets taken by the next poll, while the session polls.
        self.buffer: list[str] = []
        self._drained: asyncio.Future[None] | None = None
        self._poll: asyncio.Future[None] | None = None
        self.posting = False
        # Between the WebSocket probe and the upgrade packet: polls answer at once.
        self.upgrading = False
        self.ws: web.WebSocketResponse | None = None
        # The WebSocket's transport, for packets written straight to it (see encode).
        self._sink: FrameSink | None = None
        self.closed = False
        self.tasks: set[asyncio.Task[None]] | None = None
        # Where the connection is, as every event tells the client (see _render).
        self._offset = sio.Offset(now_ms())
        # The loop time of the ping still unanswered, 0 when none is (see beat()).
        self._pinged_at = 0.0
        self._expiry: asyncio.TimerHandle | None = None
        settings = gateway.settings
        self.subscriber = Subscriber(
            self._send,
            self._close,
            limit=settings.outbox_limit,
            send_timeout=settings.send_timeout,
            name=name,
            render=self._render,
            join=sio.encode_payload,
            direct=self,
            flusher=gateway.hub.flusher,
        )

    def open(self, ws: web.WebSocketResponse | None, sink: FrameSink | None = None) -> str:
        """Register the session and start its heartbeat; the open packet for the client.

        ``sink``: the transport of ``ws``, when packets may be written to it directly.
        """
        settings = self.gateway.settings
        self.ws = ws
        self._sink = sink
        self.sessions.by_sid[self.sid] = self
        self.gateway.hub.attach(self.subscriber)
        self.gateway.event_streams.add(self.subscriber)
        self.subscriber.start()
        logger.info("%s connected (%s)", self.subscriber.name, "websocket" if ws else "polling")
        return sio.open_packet(
            self.sid,
            upgrades=[] if ws else ["websocket"],
            ping_interval=settings.socketio_ping_interval,
            ping_timeout=settings.socketio_ping_timeout,
            max_payload=settings.max_body_bytes,
        )

    # Sending: the subscriber's writer hands every batch to _send.

    def _render(self, item: Envelope | str) -> str:
        # The writer renders in outbox order: the offset an event carries is
        # where the client is once it has that event.
        if isinstance(item, Envelope):
            self._offset.advance(item.workflow_type, item.key)
        return render(item, self._offset)

    def writable(self) -> bool:
        """Whether packets can be written straight to the WebSocket now, without waiting."""
        sink = self._sink
        return sink is not None and sink.writable()

    def encode(self, items: list[Envelope | str]) -> bytes:
        """Outbox items as the WebSocket frames of their packets, one frame per packet."""
        return b"".join([self._frame(item) for item in items])

    def _frame(self, item: Envelope | str) -> bytes:
        """One outbox item as the WebSocket frame of its packet, as :meth:`_render` makes it.

        An event's packet is the same for every connection up to its offset:
        that part is built once per event.
        """
        if isinstance(item, Envelope):
            self._offset.advance(item.workflow_type, item.key)
            head = item.transport_part(_event_head)
            packet = head + sio.event_tail(self._offset.encode()).encode()
        else:
            packet = self._render(item).encode()
        return websocket_text_frame(packet)

    def write(self, data: bytes) -> None:
        """Write frames straight to the WebSocket; only once :meth:`writable` said so."""
        assert self._sink is not None  # writable() checked it
        self._sink.write(data)

    async def _send(self, text: str) -> None:
        ws = self.ws
        if ws is not None:
            packets = text.split(sio.SEPARATOR)
            if self.writable():
                # A backlog (a replay, a burst) in one write, one frame per packet.
                self.write(b"".join([websocket_text_frame(p.encode()) for p in packets]))
                return
            for packet in packets:
                await ws.send_str(packet)
            return
        if self.closed:
            raise ConnectionError("session closed")
        self.push(text)
        # Wait until a poll takes the batch: a client that stops polling holds the writer,
        # and the subscriber's send timeout and conflation take over.
        if self._drained is None:
            self._drained = asyncio.get_running_loop().create_future()
        await self._drained

    def push(self, packets: str) -> None:
        """Queue packets for the next poll and wake a poll waiting for them."""
        self.buffer.append(packets)
        _resolve(self._poll)

    def take(self) -> str:
        """Everything queued for polling, as one body; the writer may go on."""
        body = sio.encode_payload(self.buffer)
        self.buffer = []
        drained, self._drained = self._drained, None
        _resolve(drained)
        return body

    async def poll(self) -> str:
        """Wait for packets to send, or for the session's end; one poll at a time."""
        if self._poll is not None:
            raise ApiError(400, "a poll is already waiting for this session")
        if not self.buffer and not self.closed and not self.upgrading:
            self._poll = asyncio.get_running_loop().create_future()
            try:
                await self._poll
            finally:
                self._poll = None
        if self.buffer:
            return self.take()
        return sio.NOOP if self.upgrading and not self.closed else sio.CLOSE

    async def upgrade(self, ws: web.WebSocketResponse, sink: FrameSink | None = None) -> None:
        """Move the session to ``ws``: what polling had not sent yet goes first.

        ``sink``: the transport of ``ws``, as for :meth:`open`.
        """
        # Packets queued while these are sent (a close, a noop) go in the next round,
        # not lost to the take() below.
        while self.buffer:
            pending, self.buffer = self.buffer, []
            for packet in sio.encode_payload(pending).split(sio.SEPARATOR):
                await ws.send_str(packet)
        # The writer, waiting for the batch to be taken, now sends on the WebSocket.
        self.ws = ws
        self._sink = sink
        self.upgrading = False
        self.take()
        logger.info("%s upgraded to websocket", self.subscriber.name)

    def end_polling(self) -> None:
        """The upgrade begins: a waiting poll, and any poll until the upgrade, get a noop.

        The client sends the upgrade packet only once its polling has paused,
        which waits for the poll in flight: one that reaches the gateway after
        the probe must not wait for events, or the upgrade (and whatever the
        client sends meanwhile) waits for the next ping.
        """
        self.upgrading = True
        if self._poll is not None and not self.buffer:
            self.push(sio.NOOP)

    # Heartbeat.

    def beat(self, now: float) -> None:
        """Ping the client, or end the session if a ping has gone unanswered too long.

        ``now`` is the loop's time. The gateway calls this for every session
        every ping interval (see :func:`ping_all`), rather than each session
        keeping timers of its own: a ping goes out once the last one was
        answered, and the session ends once one has waited the ping timeout.
        """
        if self.closed:
            return
        if not self._pinged_at:
            self._pinged_at = now
            self.subscriber.deliver(sio.PING)
        elif now - self._pinged_at >= self.gateway.settings.socketio_ping_timeout:
            self.close("ping timeout")

    def pong(self) -> None:
        """The client answered: the next sweep pings again."""
        self._pinged_at = 0.0

    # Receiving.

    def receive(self, packet: str) -> None:
        """Act on one Engine.IO packet from the client."""
        kind, payload = packet[:1], packet[1:]
        if kind == sio.PONG:
            self.pong()
        elif kind == sio.MESSAGE:
            try:
                self.on_socket_packet(sio.decode_socket_packet(payload))
            except sio.PacketError as exc:
                logger.info("closing %s: %s", self.subscriber.name, exc)
                self.gateway.stats.reject("invalid_message")
                self.close("invalid packet")
        elif kind == sio.CLOSE:
            self.close("closed by the client")
        elif kind != sio.NOOP:
            self.gateway.stats.reject("invalid_message")
            self.close(f"unexpected packet type {kind!r}")

    def on_socket_packet(self, packet: sio.SocketPacket) -> None:
        """Act on one Socket.IO packet."""
        if packet.namespace != sio.MAIN_NAMESPACE:
            if packet.type == sio.CONNECT:
                self.subscriber.deliver(
                    sio.connect_error_packet("Invalid namespace", packet.namespace)
                )
            return
        if packet.type == sio.CONNECT:
            self.connect(packet.data)
        elif packet.type == sio.DISCONNECT:
            self.close("client namespace disconnect")
        elif packet.type == sio.EVENT:
            self.on_event(packet.data[0], packet.data[1:], packet.ack_id)

    def connect(self, auth: dict[str, Any] | None) -> None:
        """Connect to the main namespace with the token of ``auth`` or of the query string.

        A CONNECT carrying the ``pid`` and ``offset`` of an earlier connection
        (to this gateway or any other) resumes it, see :meth:`_recover`.
        """
        settings = self.gateway.settings
        if self.grant is not None:
            return
        if settings.secret is None:
            grant = anonymous_grant(settings)
        else:
            token = (auth or {}).get("token") or self.token
            try:
                if not isinstance(token, str):
                    raise AuthError("a token is required: auth {token} or ?token=")
                grant = verify_token(settings, token)
            except AuthError as exc:
                self.gateway.stats.reject("unauthorized")
                self.subscriber.deliver(sio.connect_error_packet(str(exc)[:120]))
                return
        self.grant = grant
        if grant.expires_at is not None:
            # The connection lives no longer than its token.
            self._expiry = asyncio.get_running_loop().call_later(
                max(grant.expires_at - time.time(), 0), self.close, "token expired"
            )
        resume = sio.resume_point(auth)
        if resume is None:
            self._start_fresh(grant)
        else:
            self._track_task(asyncio.get_running_loop().create_task(self._recover(grant, *resume)))

    def _start_fresh(self, grant: Grant) -> None:
        """Connected with a new pid: live events from now on, on the default subscriptions."""
        self._offset = sio.Offset(now_ms())
        self.subscriber.deliver(sio.connect_packet(_new_id(), _new_id()))
        for wtype, session in default_subscriptions(grant):
            self._subscribe(_subscription(wtype, session))

    async def _recover(self, grant: Grant, pid: str, offset: sio.Offset) -> None:
        """Resume a connection from its offset, or start afresh if its history is gone.

        Nothing of the earlier connection is kept anywhere: the offset says
        how far the client got, per type, and the pid is only echoed back.
        """
        plan = await self._resume_plan(grant, offset)
        if plan is None:
            self._start_fresh(grant)
            return
        self._offset = offset
        self.subscriber.deliver(sio.connect_packet(_new_id(), pid))
        for frame in plan:
            if frame.workflow_type == ANY_TYPE:
                self._follow(frame)
            else:
                self._subscribe(frame)

    async def _resume_plan(self, grant: Grant, offset: sio.Offset) -> list[Subscribe] | None:
        """The default subscriptions of ``grant``, resumed; None unless history reaches back.

        ``since`` needs one workflow type, so a subscription to ``*`` is made
        live, beside one per type the gateway knows of or the offset names,
        each resumed from where the client got to in it (or its time floor).
        """
        gateway = self.gateway
        reader = gateway.reader
        try:
            await asyncio.wait_for(reader.started.wait(), gateway.settings.replay_wait)
        except TimeoutError:
            return None
        known = {gateway.keys.workflow_type(stream) for stream in reader.positions}
        every_type = sorted(
            {wtype for wtype in known if wtype is not None} | offset.positions.keys()
        )
        defaults = default_subscriptions(grant)
        live = [key for key in defaults if key[0] == ANY_TYPE]
        # A type both granted and among the owner's sessions' is resumed once.
        resumed = list(
            dict.fromkeys(
                (wtype, session)
                for key_type, session in defaults
                for wtype in (every_type if key_type == ANY_TYPE else [key_type])
            )
        )
        if len(live) + len(resumed) > gateway.settings.max_subscriptions:
            return None
        # One look-up per type, all at once: after a restart every client comes back together.
        needed = sorted({wtype for wtype, _ in resumed})
        try:
            found = await asyncio.gather(*(self._since(wtype, offset) for wtype in needed))
        except (RedisError, OSError) as exc:
            logger.info("%s not recovered: %s", self.subscriber.name, exc)
            return None
        if None in found:
            return None
        sinces = dict(zip(needed, found, strict=True))
        plan = [_subscription(*key) for key in live]
        return plan + [_subscription(wtype, session, sinces[wtype]) for wtype, session in resumed]

    async def _since(self, workflow_type: str, offset: sio.Offset) -> StreamId | None:
        """Where to resume ``workflow_type`` from; None when its history is gone."""
        store = self.gateway.store
        stream = self.gateway.keys.stream(workflow_type)
        since = offset.positions.get(workflow_type)
        if since is None:
            # No event of the type reached the client: it has missed what came
            # after its time floor, so resume from the last entry before it.
            before = StreamId(max(offset.floor - 1, 0), STREAM_ID_PART_MAX)
            found: Any = await store.redis.xrevrange(stream, max=str(before), min="-", count=1)
            if found:
                return StreamId.from_redis(found[0][0])
            since = START
        return since if await store.reaches_back_to(stream, since) else None

    def on_event(self, name: str, args: list[Any], ack_id: int | None) -> None:
        """``subscribe`` or ``unsubscribe`` with ``{workflow_type, session_id}``."""
        if self.grant is None:
            return
        outcome = self._on_action(self.grant, name, args)
        if ack_id is not None:
            self.subscriber.deliver(sio.ack_packet(ack_id, [outcome]))
        elif outcome is not None:
            self.subscriber.deliver(error_frame(outcome["code"], outcome["message"]))

    def _on_action(self, grant: Grant, name: str, args: list[Any]) -> dict[str, str] | None:
        """Do what the client asked; the error, if any."""
        if (
            name not in ("subscribe", "unsubscribe")
            or len(args) != 1
            or not isinstance(args[0], dict)
        ):
            return _error("invalid_message", "emit subscribe or unsubscribe with one object")
        try:
            frame = parse_client_frame(orjson.dumps({**args[0], "action": name}))
        except (MalformedJson, ValidationError):
            return _error("invalid_message", f"not a valid {name}: workflow_type, session_id")
        if isinstance(frame, Unsubscribe):
            if not self.gateway.hub.unsubscribe(self.subscriber, frame.key):
                return _error("not_subscribed", "there is no such subscription on this connection")
            self.subscriber.deliver(unsubscribed_frame(frame))
            return None
        assert isinstance(frame, Subscribe)
        if not self.own_subscriptions:
            # The first subscription of the client's own narrows what it receives.
            self.own_subscriptions = True
            for key in default_subscriptions(grant):
                if key != frame.key:
                    self.gateway.hub.unsubscribe(self.subscriber, key)
        return self._subscribe(frame)

    def _subscribe(self, frame: Subscribe) -> dict[str, str] | None:
        try:
            owner = check_subscription(
                self.grant, self.subscriber.subscriptions, frame, self._limit()
            )
        except ApiError as exc:
            return _error(exc.code, exc.message)
        replay = self.gateway.catchup.subscribe(self.subscriber, frame, owner)
        if replay is not None:
            self._track_task(replay)
        return None

    def _follow(self, frame: Subscribe) -> None:
        """Subscribe live, beside resumed subscriptions that send what was missed.

        Without the current state :meth:`_subscribe` would send, which the
        client has had, and claiming nothing, so no replay is held back for it.
        """
        try:
            owner = check_subscription(
                self.grant, self.subscriber.subscriptions, frame, self._limit()
            )
        except ApiError as exc:
            self.subscriber.deliver(error_frame(exc.code, exc.message))
            return
        self.subscriber.deliver(subscribed_frame(frame))
        self.gateway.hub.subscribe(self.subscriber, frame.key, owner=owner)

    def _limit(self) -> int:
        return self.gateway.settings.max_subscriptions

    def _track_task(self, task: asyncio.Task[None]) -> None:
        if self.tasks is None:
            self.tasks = set()
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # The end.

    async def _close(self, code: int, reason: str) -> None:
        """The subscriber's way to end the session (slow consumer, shutdown)."""
        self.close(reason, code)

    def close(self, reason: str, code: int = CLOSE_GOING_AWAY) -> None:
        """End the session: forget it, wake a waiting poll, stop the writer soon."""
        if self.closed:
            return
        self.closed = True
        logger.info("%s disconnected: %s", self.subscriber.name, reason)
        if self._expiry is not None:
            self._expiry.cancel()
        self.sessions.by_sid.pop(self.sid, None)
        self.gateway.hub.detach(self.subscriber)
        self.gateway.event_streams.discard(self.subscriber)
        for task in self.tasks or ():
            task.cancel()
        _resolve(self._poll)
        if self.ws is not None and not self.ws.closed:
            self._track(self.ws.close(code=code, message=reason.encode()))
        self._track(self.subscriber.stop())

    def _track(self, work: Any) -> None:
        stopping = self.sessions.stopping
        task = asyncio.get_running_loop().create_task(work)
        stopping.add(task)
        task.add_done_callback(stopping.discard)


def default_subscriptions(grant: Grant) -> list[SubscriptionKey]:
    """What a client is subscribed to on connecting: every type and session its grant names.

    With the owner_sessions claim, every type too: narrowed to the holder's own sessions.
    """
    if ANY_TYPE in grant.workflow_types:
        return [(ANY_TYPE, None)]
    types: list[SubscriptionKey] = [(wtype, None) for wtype in sorted(grant.workflow_types)]
    owned: list[SubscriptionKey] = [(ANY_TYPE, None)] if grant.owned else []
    return types + [(ANY_TYPE, session) for session in sorted(grant.sessions)] + owned


def _subscription(
    workflow_type: str, session_id: str | None, since: StreamId | None = None
) -> Subscribe:
    # since is validated from its text, as it comes from clients.
    fields = {"workflow_type": workflow_type, "session_id": session_id}
    return Subscribe.model_validate(
        {"action": "subscribe", **fields, "since": None if since is None else str(since)}
    )


def _new_id() -> str:
    return secrets.token_urlsafe(15)


def _error(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def _resolve(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


def _check_query(request: web.Request) -> str:
    """The transport the request names; 400 unless it speaks Engine.IO v4."""
    if request.query.get("EIO") != sio.PROTOCOL_VERSION:
        raise ApiError(400, "unsupported protocol version: EIO=4 is required")
    transport = request.query.get("transport", "")
    if transport not in TRANSPORTS:
        raise ApiError(400, "transport must be polling or websocket")
    return transport


def _session(request: web.Request) -> EngineSession:
    session = request.app[SESSIONS].by_sid.get(request.query.get("sid", ""))
    if session is None:
        raise ApiError(400, "unknown session id")
    return session


def _new_session(request: web.Request) -> EngineSession:
    check_origin(request)
    check_capacity(request)
    gateway = request.app[GATEWAY]
    name = f"socketio:{client_address(request, gateway.settings.proxies)}"
    return EngineSession(gateway, request.app[SESSIONS], name, request.query.get("token"))


def _text(body: str) -> web.Response:
    return web.Response(text=body, content_type="text/plain", headers={"Cache-Control": "no-store"})


@routes.get(PATH)
@streaming
async def engine_get(request: web.Request) -> web.StreamResponse:
    """A handshake, a poll, or a WebSocket (new or upgrading a polling session)."""
    try:
        if _check_query(request) == "websocket":
            return await _websocket(request)
        if "sid" not in request.query:
            return _text(_new_session(request).open(None))
        return _text(await _poll(_session(request)))
    except ApiError as error:
        return refusal(request, error)


async def _poll(session: EngineSession) -> str:
    if session.ws is not None:
        raise ApiError(400, "the session has moved to a websocket")
    try:
        return await session.poll()
    except ApiError:
        session.close("two polls at once")
        raise


@routes.post(PATH)
async def engine_post(request: web.Request) -> web.Response:
    """Packets from a polling client."""
    _check_query(request)
    session = _session(request)
    if session.posting:
        session.close("two posts at once")
        raise ApiError(400, "a post is already being read for this session")
    session.posting = True
    try:
        body = await request.text()
    finally:
        session.posting = False
    try:
        packets = sio.decode_payload(body)
    except sio.PacketError as exc:
        session.close(str(exc))
        raise ApiError(400, str(exc)) from None
    for packet in packets:
        session.receive(packet)
    return _text("ok")


async def _websocket(request: web.Request) -> web.StreamResponse:
    settings = request.app[GATEWAY].settings
    upgrading = _session(request) if "sid" in request.query else None
    if upgrading is not None and upgrading.ws is not None:
        raise ApiError(400, "the session has a websocket already")
    session = upgrading or _new_session(request)
    ws = web.WebSocketResponse(
        timeout=CLOSE_TIMEOUT, compress=False, max_msg_size=settings.max_ws_frame_bytes
    )
    await ws.prepare(request)
    drop_http_parser(request)
    if upgrading is None:
        await ws.send_str(session.open(ws, FrameSink.of(request, ws)))
    try:
        # ws.receive() rather than ``async for``: the iterator's frame would stay
        # alive, in memory, for as long as the session is idle.
        while (message := await ws.receive()).type not in ENDS:
            if message.type is not WSMsgType.TEXT:
                session.close("binary frames are not accepted")
                break
            packet: str = message.data
            if upgrading is not None and session.ws is None:
                if packet == sio.PING + sio.PROBE:
                    await ws.send_str(sio.PONG + sio.PROBE)
                    session.end_polling()
                elif packet == sio.UPGRADE:
                    await session.upgrade(ws, FrameSink.of(request, ws))
                continue
            session.receive(packet)
            if session.closed:
                break
    finally:
        if session.ws is ws or upgrading is None:
            session.close("websocket closed")
        else:
            # The probe went away before the upgrade: the session goes on polling.
            session.upgrading = False
    return ws


# Sessions pinged between two looks at the loop: pings queue writer tasks,
# and slices keep only so many of them alive at once.
PING_SLICE = 256


async def ping_all(sessions: Sessions) -> None:
    """One heartbeat for every Engine.IO session; see EngineSession.beat."""
    loop = asyncio.get_running_loop()
    for count, session in enumerate(list(sessions.by_sid.values()), start=1):
        session.beat(loop.time())
        if count % PING_SLICE == 0:
            await asyncio.sleep(0)


async def close_sessions(app: web.Application) -> None:
    """End every session as the gateway shuts down, and wait for their writers."""
    sessions = app[SESSIONS]
    for session in list(sessions.by_sid.values()):
        session.close("server shutting down")
    if sessions.stopping:
        await asyncio.wait(list(sessions.stopping))


def setup(app: web.Application) -> None:
    """Serve ``/socket.io/`` on ``app``."""
    app[SESSIONS] = Sessions()
    app.add_routes(routes)
    app.on_shutdown.append(close_sessions)

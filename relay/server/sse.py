"""Server-Sent Events: ``GET /api/workflows/events``, the same events as the WebSocket.

Each event is sent as ``id:`` (its stream id), ``event:`` (its event name) and
``data:`` (its data object). A reconnecting ``EventSource`` sends back the last
id in ``Last-Event-ID`` and resumes from there, as a WebSocket ``since`` does;
``?since=`` does the same for clients such as ``curl -N``. A comment line every
``keepalive`` seconds keeps proxies from closing an idle stream.
"""

from __future__ import annotations

import logging

import orjson
from aiohttp import web

from relay.protocol.frames import ANY_TYPE, Envelope, Subscribe
from relay.server.client_address import client_address
from relay.server.cors import check_origin
from relay.server.errors import ApiError, streaming
from relay.server.gateway import GATEWAY
from relay.server.guards import (
    check_capacity,
    query_subscription,
    refusal,
    require_grant,
    subscriber_grant,
)
from relay.server.subscriber import Subscriber

logger = logging.getLogger(__name__)

KEEP_ALIVE = ": keep-alive\n\n"
RECONNECT_MS = 1_000

routes = web.RouteTableDef()


def sse_text(item: Envelope | str) -> str:
    """One outbox item as an SSE message; control frames become named events."""
    if isinstance(item, Envelope):
        return item.sse
    if item.startswith(":"):
        return item
    kind = orjson.loads(item).get("type", "message")
    return f"event: {kind}\ndata: {item}\n\n"


def _admit(request: web.Request) -> tuple[Subscribe, str | None]:
    """Checks before the stream starts; the subscription the request names, and its owner scope."""
    check_origin(request)
    check_capacity(request)
    grant = subscriber_grant(request)
    query = {"workflow_type": ANY_TYPE, **request.query}
    query.pop("token", None)
    last_event_id = request.headers.get("Last-Event-ID")
    if last_event_id and "since" not in query and query["workflow_type"] != ANY_TYPE:
        query["since"] = last_event_id
    subscription = query_subscription(query)
    assert subscription is not None  # the query always names a type here
    owner = require_grant(grant, subscription.workflow_type, subscription.session_id)
    return subscription, owner


@routes.get("/api/workflows/events")
@streaming
async def events(request: web.Request) -> web.StreamResponse:
    """Stream events of a type (``*`` by default), optionally of one session."""
    gateway = request.app[GATEWAY]
    try:
        subscription, owner = _admit(request)
    except ApiError as error:
        return refusal(request, error)

    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    await response.write(f"retry: {RECONNECT_MS}\n\n".encode())

    async def send(text: str) -> None:
        await response.write(text.encode())

    settings = gateway.settings
    address = client_address(request, settings.proxies)

    async def close(code: int, reason: str) -> None:
        logger.info("ending event stream for %s: %s (%d)", address, reason, code)

    subscriber = Subscriber(
        send,
        close,
        limit=settings.outbox_limit,
        send_timeout=settings.send_timeout,
        name=f"sse:{address}",
        render=sse_text,
        join="".join,
    )
    gateway.hub.attach(subscriber)
    gateway.event_streams.add(subscriber)
    subscriber.start()
    logger.info("%s connected", subscriber.name)
    replay = gateway.catchup.subscribe(subscriber, subscription, owner)
    try:
        while not await subscriber.finished(settings.sse_keepalive):
            subscriber.deliver(KEEP_ALIVE)
    finally:
        # Forget the stream before awaiting anything (see the WebSocket handler).
        gateway.hub.detach(subscriber)
        gateway.event_streams.discard(subscriber)
        if replay is not None:
            replay.cancel()
        logger.info("%s disconnected", subscriber.name)
        await subscriber.stop()
    return response

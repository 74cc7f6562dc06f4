"""HTTP endpoints for publishers and probes."""

from __future__ import annotations

import asyncio

from aiohttp import hdrs, web
from pydantic import ValidationError
from redis.exceptions import RedisError, ResponseError

from relay.protocol.entries import Published, now_ms
from relay.protocol.event import parse_event_json, parse_event_list_json
from relay.protocol.idempotency import IDEMPOTENCY_HEADER, REPLAYED_HEADER, check_key
from relay.protocol.keys import event_name
from relay.server.answers import (
    HealthAnswer,
    NotReadyAnswer,
    ReadyAnswer,
    batch_answer,
    publish_answer,
)
from relay.server.errors import ApiError, json_response, model_response, raise_validation
from relay.server.gateway import GATEWAY
from relay.server.guards import limit_publisher, require_publisher
from relay.server.publishing import publish_events

READY_PROBE_TIMEOUT = 1.0
READY_PROBE_TTL_MS = 10_000

routes = web.RouteTableDef()


async def read_json_body(request: web.Request) -> bytes:
    """The raw body of a JSON request.

    415 for another content type or a charset other than UTF-8, 400 when
    empty, 408 when the body takes longer than ``body_timeout`` to arrive.
    """
    if request.headers.get(hdrs.CONTENT_TYPE) not in PLAIN_JSON:
        _check_content_type(request)
    content = request.content
    if content.is_eof():
        # The whole body has arrived already (the common case of a small
        # body): it is taken as it is, with no timer armed for the wait.
        body = content.read_nowait()
        limit = request.app[GATEWAY].settings.max_body_bytes
        if len(body) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body))
    else:
        body = await _read_in_time(request)
    if not body or body.isspace():
        raise ApiError(400, "request body is empty", code="malformed_json")
    return body


# The Content-Type headers nearly every publisher sends, accepted as they are:
# aiohttp's parse of the header costs more than the rest of reading the body.
PLAIN_JSON = frozenset(
    {
        "application/json",
        "application/json; charset=utf-8",
        "application/json;charset=utf-8",
        "application/json; charset=UTF-8",
        "application/json;charset=UTF-8",
    }
)


def _check_content_type(request: web.Request) -> None:
    """415 unless the request's media type is JSON, sent as UTF-8 if it names a charset."""
    content_type = request.content_type
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise ApiError(415, f"expected content-type application/json, got {content_type!r}")
    charset = request.charset
    if charset is not None and charset.lower() != "utf-8":
        raise ApiError(415, f"JSON must be sent as utf-8, got charset {charset!r}")


async def _read_in_time(request: web.Request) -> bytes:
    """The body of a request still arriving: 408 unless it is whole within ``body_timeout``."""
    timeout = request.app[GATEWAY].settings.body_timeout
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        message = f"the request body did not arrive within {timeout:g} seconds"
        raise ApiError(408, message, hang_up=True) from None
    except ConnectionError:
        # The client went away mid-upload: nothing to do with the store.
        message = "the client disconnected before sending the whole body"
        raise ApiError(400, message, code="client_disconnected") from None


def idempotency_key(request: web.Request) -> str | None:
    """The request's ``Idempotency-Key``, if it sent one; 422 when it breaks the rules."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    try:
        return check_key(key)
    except ValueError as exc:
        detail = [{"field": IDEMPOTENCY_HEADER, "message": f"the key {exc}"}]
        raise ApiError(422, f"invalid header: {IDEMPOTENCY_HEADER}", detail=detail) from None


def _published_headers(published: Published) -> dict[str, str] | None:
    return {REPLAYED_HEADER: "true"} if published.replayed else None


@routes.post("/api/workflows/progress")
async def publish_one(request: web.Request) -> web.Response:
    """Publish one event; answers its stream id and event name."""
    gateway = request.app[GATEWAY]
    require_publisher(request)
    key = idempotency_key(request)
    body = await read_json_body(request)
    try:
        event = parse_event_json(body, now_ms())
    except ValidationError as exc:
        raise_validation(exc)
    limit_publisher(request, 1)
    published = await publish_events(gateway, [event], key)
    (receipt,) = published.receipts
    answer = publish_answer(receipt.id, event_name(event.workflow_type), receipt.cancel_requested)
    return json_response(answer, status=202, headers=_published_headers(published))


@routes.post("/api/workflows/progress/batch")
async def publish_batch(request: web.Request) -> web.Response:
    """Publish a JSON array of events: every one is valid and written, or none is."""
    gateway = request.app[GATEWAY]
    require_publisher(request)
    key = idempotency_key(request)
    body = await read_json_body(request)
    try:
        events = parse_event_list_json(body, now_ms())
    except ValidationError as exc:
        raise_validation(exc)
    limit = gateway.settings.max_batch
    if len(events) > limit:
        raise ApiError(413, f"a batch holds at most {limit} events, got {len(events)}")
    limit_publisher(request, len(events))
    published = await publish_events(gateway, events, key)
    pairs = zip(events, published.receipts, strict=True)
    cancelled = sorted({event.session_id for event, r in pairs if r.cancel_requested})
    answer = batch_answer([r.id for r in published.receipts], cancelled)
    return json_response(answer, status=202, headers=_published_headers(published))


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """The process is up and serving."""
    return model_response(HealthAnswer(status="ok"))


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Ready when the store accepts writes and the stream reader is following the streams."""
    gateway = request.app[GATEWAY]
    problems = []
    try:
        async with asyncio.timeout(READY_PROBE_TIMEOUT):
            # A write, not a PING: a Redis out of memory or read-only answers
            # PING yet refuses every publish.
            await gateway.store.probe_write(READY_PROBE_TTL_MS)
    except ResponseError as exc:
        problems.append(f"store refuses writes: {exc}")
    except (RedisError, OSError, TimeoutError) as exc:
        problems.append(f"store unreachable: {exc or type(exc).__name__}")
    if (problem := gateway.reader.problem) is not None:
        problems.append(problem)
    if (problem := gateway.liveness.last_error) is not None:
        problems.append(problem)
    if problems:
        retry = str(gateway.settings.retry_after_seconds)
        answer = NotReadyAnswer(status="not ready", problems=problems)
        return model_response(answer, status=503, headers={"Retry-After": retry})
    return model_response(ReadyAnswer(status="ready", embedded=gateway.settings.embedded))

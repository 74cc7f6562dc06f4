"""Applying the credentials of :mod:`relay.auth` to HTTP requests, and browser origins."""

from __future__ import annotations

import math

from aiohttp import web

from relay.auth import OPEN, AuthError, Grant, bearer, key_matches, read_token
from relay.context import RELAY
from relay.errors import ApiError, Handler

CHALLENGE = {"WWW-Authenticate": "Bearer"}
CORS_METHODS = "GET, POST, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type, Last-Event-ID"


def require_publisher(request: web.Request) -> None:
    """Raise 401 without an API key and 403 with a wrong one, when keys are configured."""
    keys = request.app[RELAY].settings.publisher_keys
    if not keys:
        return
    presented = bearer(request.headers.get("Authorization"))
    if presented is None:
        raise ApiError(
            401, "an API key is required: Authorization: Bearer <key>", headers=CHALLENGE
        )
    if not key_matches(presented, keys):
        raise ApiError(403, "the API key is not valid")


def limit_publisher(request: web.Request, events: int) -> None:
    """Raise 429 with Retry-After when this publisher is over its event rate."""
    relay = request.app[RELAY]
    publisher = bearer(request.headers.get("Authorization")) or request.remote or "?"
    wait = relay.publisher_limits.take(publisher, events)
    if wait > 0:
        retry = str(max(1, math.ceil(wait)))
        raise ApiError(429, "publish rate exceeded, slow down", headers={"Retry-After": retry})


def check_capacity(request: web.Request) -> None:
    """Raise 503 when the gateway holds as many streaming connections as it may."""
    relay = request.app[RELAY]
    settings = relay.settings
    if len(relay.sockets) + len(relay.event_streams) >= settings.max_connections:
        retry = str(settings.retry_after_seconds)
        raise ApiError(
            503, "this gateway is at its connection limit", headers={"Retry-After": retry}
        )


def token_of(request: web.Request) -> str | None:
    """A subscriber token from ``?token=`` or ``Authorization: Bearer``."""
    return request.query.get("token") or bearer(request.headers.get("Authorization"))


def subscriber_grant(request: web.Request) -> Grant:
    """What the request's token grants; everything when no secret is configured."""
    secret = request.app[RELAY].settings.secret
    if secret is None:
        return OPEN
    token = token_of(request)
    if token is None:
        raise ApiError(
            401, "a token is required: ?token= or Authorization: Bearer", headers=CHALLENGE
        )
    try:
        return read_token(token, secret)
    except AuthError as exc:
        raise ApiError(401, str(exc), headers=CHALLENGE) from None


def require_grant(grant: Grant, workflow_type: str, session_id: str | None) -> None:
    """Raise 403 unless ``grant`` covers the subscription or session."""
    if not grant.allows(workflow_type, session_id):
        raise ApiError(403, "the token does not grant this", code="forbidden")


def check_origin(request: web.Request) -> None:
    """Refuse browsers from origins outside the allow-list (when there is one)."""
    origins = request.app[RELAY].settings.origins
    origin = request.headers.get("Origin")
    if origins and origin is not None and origin not in origins:
        raise ApiError(403, f"origin {origin!r} is not allowed", code="forbidden_origin")


def cors_headers(request: web.Request) -> dict[str, str]:
    """CORS headers for the request's origin, when it is an allowed one."""
    origins = request.app[RELAY].settings.origins
    origin = request.headers.get("Origin")
    if origin is None or (origins and origin not in origins):
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": CORS_METHODS,
        "Access-Control-Allow-Headers": CORS_HEADERS,
        "Vary": "Origin",
    }


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """CORS headers on every answer to an allowed origin, and answers to its preflights."""
    headers = cors_headers(request)
    preflight = "Access-Control-Request-Method" in request.headers
    if headers and request.method == "OPTIONS" and preflight:
        return web.Response(status=204, headers=headers)
    response = await handler(request)
    if not response.prepared:  # streams set their own before they start
        response.headers.update(headers)
    return response

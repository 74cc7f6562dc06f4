"""Browser origins: the allow-list, CORS headers on answers, and preflight requests."""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from relay.server.errors import ApiError
from relay.server.gateway import GATEWAY

CORS_METHODS = "GET, POST, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type, Idempotency-Key, Last-Event-ID"


def check_origin(request: web.Request) -> None:
    """Refuse browsers from origins outside the allow-list (when there is one).

    A page of the gateway's own origin (its dashboard) is always let in: the
    list is there to keep other sites' pages out, and this one is the
    gateway's. Its host and port are those the browser addressed, which a
    proxy in front passes on in ``Host``.
    """
    origins = request.app[GATEWAY].settings.origins
    origin = request.headers.get("Origin")
    if origins and origin is not None and origin not in origins and not _own(request, origin):
        raise ApiError(403, f"origin {origin!r} is not allowed", code="forbidden_origin")


def _own(request: web.Request, origin: str) -> bool:
    host = request.headers.get("Host")
    return host is not None and urlsplit(origin).netloc.lower() == host.lower()


def cors_headers(request: web.Request) -> dict[str, str]:
    """CORS headers for the request's origin, when it is an allowed one."""
    origins = request.app[GATEWAY].settings.origins
    origin = request.headers.get("Origin")
    if origin is None or (origins and origin not in origins):
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": CORS_METHODS,
        "Access-Control-Allow-Headers": CORS_HEADERS,
        "Vary": "Origin",
    }


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """CORS headers on every answer to an allowed origin (an ``on_response_prepare`` hook).

    A hook rather than a middleware: a middleware's frame would stay alive for
    as long as each WebSocket is open. An answer to a request without an
    ``Origin`` (every publisher's) returns at once: only browsers send one.
    """
    if "Origin" in request.headers:
        response.headers.update(cors_headers(request))


async def preflight(request: web.Request) -> web.StreamResponse:
    """Answer a CORS preflight from an allowed origin; any other OPTIONS is refused."""
    if "Access-Control-Request-Method" in request.headers and cors_headers(request):
        return web.Response(status=204)
    raise ApiError(405, "OPTIONS is only answered as a CORS preflight from an allowed origin")

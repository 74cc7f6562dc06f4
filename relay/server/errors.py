"""JSON error answers and the middleware that guarantees them (never a stack trace)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError

from relay.protocol.event import MalformedJson, validation_detail
from relay.protocol.store_errors import is_transient
from relay.server.answers import ErrorAnswer

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "rate_limited",
    500: "internal",
    503: "unavailable",
}


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON answer encoded with orjson, which is several times faster than json."""
    return web.Response(
        body=orjson.dumps(data), status=status, headers=headers, content_type="application/json"
    )


def model_response(
    answer: BaseModel, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """An answer model of :mod:`relay.server.answers` as a JSON answer."""
    return json_response(answer.model_dump(), status=status, headers=headers)


class ApiError(Exception):
    """An error answered to the client as ``{"error", "message", "detail"}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        detail: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        hang_up: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, "error")
        self.message = message
        self.detail = detail or []
        self.headers = headers or {}
        # Close the connection once answered, instead of reading what is left of the request.
        self.hang_up = hang_up

    def response(self) -> web.Response:
        """The JSON answer for this error."""
        body = ErrorAnswer.model_validate(
            {"error": self.code, "message": self.message, "detail": self.detail}
        )
        return model_response(body, status=self.status, headers=self.headers)


def raise_validation(exc: ValidationError) -> NoReturn:
    """A pydantic failure as 422, naming every bad field."""
    detail = validation_detail(exc)
    fields = ", ".join(item["field"] for item in detail)
    raise ApiError(422, f"invalid fields: {fields}", detail=detail)


def error_middleware(
    *, max_body: int, retry_after: int, on_error: Callable[[str], None]
) -> Middleware:
    """Every failure becomes a JSON error; transient Redis trouble becomes 503 with Retry-After.

    A Redis failure that would happen again on a retry (see
    :func:`relay.protocol.store_errors.is_transient`) is a 500 like any other fault.

    ``on_error`` is told the code of every error answered, for the metrics.
    """

    def as_api_error(exc: Exception, request: web.Request) -> ApiError | None:
        if isinstance(exc, ApiError):
            return exc
        if isinstance(exc, MalformedJson):
            return ApiError(400, f"body is not valid JSON: {exc}", code="malformed_json")
        if isinstance(exc, web.HTTPRequestEntityTooLarge):
            return ApiError(413, f"request body is larger than {max_body} bytes")
        if isinstance(exc, web.HTTPException):
            if exc.status < 400:
                return None
            return ApiError(exc.status, exc.reason, headers=_passed_headers(exc))
        if isinstance(exc, RedisError | OSError) and is_transient(exc):
            logger.warning("%s %s: store unavailable: %s", request.method, request.path, exc)
            headers = {"Retry-After": str(retry_after)}
            return ApiError(503, "the store is unavailable, try again", headers=headers)
        logger.exception("%s %s failed", request.method, request.path, exc_info=exc)
        return ApiError(500, "internal error")

    async def guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except Exception as exc:
            error = as_api_error(exc, request)
            if error is None:
                raise
            on_error(error.code)
            response = error.response()
            if error.hang_up:
                await _answer_and_close(request, response)
            return response

    @web.middleware
    def middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
        if getattr(request.match_info.handler, _STREAMING, False):
            return handler(request)
        return guarded(request, handler)

    return middleware


_STREAMING = "relay_streaming"


def streaming(handler: Handler) -> Handler:
    """Mark a long-lived handler (WebSocket, SSE) that answers its own errors.

    The error middleware hands such a request straight to the handler, so no
    middleware frame stays alive (and in memory) for as long as the
    connection is open. The handler must answer its refusals itself, with
    :func:`relay.server.guards.refusal`.
    """
    setattr(handler, _STREAMING, True)
    return handler


async def _answer_and_close(request: web.Request, response: web.Response) -> None:
    """Send ``response`` and close the connection.

    aiohttp would otherwise keep reading (and discarding) the rest of the
    body for a while, which is exactly what a client that sends too slowly
    must not be given.
    """
    response.force_close()
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionError:
        pass  # the client left first; there is nothing left to close politely
    request.protocol.force_close()


def _passed_headers(exc: web.HTTPException) -> dict[str, str]:
    return {name: value for name, value in exc.headers.items() if name.lower() == "allow"}

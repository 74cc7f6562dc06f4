"""JSON error answers and the middleware that guarantees them (never a stack trace)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import ValidationError
from redis.exceptions import RedisError

from relay.models import MalformedJson, validation_detail

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "rate_limited",
    500: "internal",
    503: "unavailable",
}


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
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, "error")
        self.message = message
        self.detail = detail or []
        self.headers = headers or {}

    def response(self) -> web.Response:
        """The JSON answer for this error."""
        body: dict[str, Any] = {"error": self.code, "message": self.message, "detail": self.detail}
        return web.json_response(body, status=self.status, headers=self.headers)


def raise_validation(exc: ValidationError) -> NoReturn:
    """A pydantic failure as 422, naming every bad field."""
    detail = validation_detail(exc)
    fields = ", ".join(item["field"] for item in detail)
    raise ApiError(422, f"invalid fields: {fields}", detail=detail)


def error_middleware(*, max_body: int, retry_after: int) -> Middleware:
    """Every failure becomes a JSON error; Redis trouble becomes 503 with Retry-After."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return exc.response()
        except MalformedJson as exc:
            return ApiError(400, f"body is not valid JSON: {exc}", code="malformed_json").response()
        except web.HTTPRequestEntityTooLarge:
            return ApiError(413, f"request body is larger than {max_body} bytes").response()
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return ApiError(exc.status, exc.reason, headers=_passed_headers(exc)).response()
        except (RedisError, OSError) as exc:
            logger.warning("%s %s: store unavailable: %s", request.method, request.path, exc)
            return ApiError(
                503,
                "the store is unavailable, try again",
                headers={"Retry-After": str(retry_after)},
            ).response()
        except Exception:
            logger.exception("%s %s failed", request.method, request.path)
            return ApiError(500, "internal error").response()

    return middleware


def _passed_headers(exc: web.HTTPException) -> dict[str, str]:
    return {name: value for name, value in exc.headers.items() if name.lower() == "allow"}

"""Reporters: how a Python worker publishes progress.

:class:`Reporter` (blocking) and :class:`AsyncReporter` (asyncio) write
straight to the Redis streams through the same publish function the gateway
uses, so their entries are indistinguishable from HTTP-published ones.
:class:`HttpReporter` posts to a gateway, for workers that cannot reach Redis.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from types import TracebackType
from typing import Any, Self

import redis
import redis.asyncio

from relay.keys import Keys
from relay.models import ProgressEvent, Status
from relay.streams import queue_publish

DEFAULT_MAXLEN = 10_000


class ReportError(RuntimeError):
    """A report was not accepted; the message says why."""


def build_event(
    session_id: str,
    workflow_type: str,
    step: str,
    progress: float,
    metadata: dict[str, Any] | None = None,
    status: Status | None = None,
    error: str | None = None,
) -> ProgressEvent:
    """Validate reporter arguments with the same rules as every other edge."""
    fields: dict[str, Any] = {
        "session_id": session_id,
        "workflow_type": workflow_type,
        "step": step,
        "progress": progress,
        "metadata": metadata or {},
    }
    if status is not None:
        fields["status"] = status
    if error is not None:
        fields["error"] = error
    return ProgressEvent.model_validate(fields)


class Reporter:
    """Publishes progress straight to Redis, blocking.

    >>> reporter = Reporter("redis://localhost:6379/0")
    >>> reporter.report("s1", "map", "analyzing", 45, {"details": "forests"})
    '1700000000000-0'
    """

    def __init__(
        self,
        redis_url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "",
        maxlen: int = DEFAULT_MAXLEN,
        client: redis.Redis | None = None,
    ) -> None:
        self._redis = client or redis.Redis.from_url(redis_url, decode_responses=True)
        self._keys = Keys(prefix)
        self._maxlen = maxlen

    def report(
        self,
        session_id: str,
        workflow_type: str,
        step: str,
        progress: float,
        metadata: dict[str, Any] | None = None,
        status: Status | None = None,
        error: str | None = None,
    ) -> str:
        """Publish one event and return its stream id."""
        event = build_event(session_id, workflow_type, step, progress, metadata, status, error)
        with self._redis.pipeline(transaction=True) as pipe:
            queue_publish(pipe, self._keys, [event], self._maxlen)
            results = pipe.execute()
        return str(results[0])

    def close(self) -> None:
        """Release the Redis connections."""
        self._redis.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncReporter:
    """Publishes progress straight to Redis from asyncio code."""

    def __init__(
        self,
        redis_url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "",
        maxlen: int = DEFAULT_MAXLEN,
        client: redis.asyncio.Redis | None = None,
    ) -> None:
        self._redis = client or redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
        self._keys = Keys(prefix)
        self._maxlen = maxlen

    async def report(
        self,
        session_id: str,
        workflow_type: str,
        step: str,
        progress: float,
        metadata: dict[str, Any] | None = None,
        status: Status | None = None,
        error: str | None = None,
    ) -> str:
        """Publish one event and return its stream id."""
        event = build_event(session_id, workflow_type, step, progress, metadata, status, error)
        async with self._redis.pipeline(transaction=True) as pipe:
            queue_publish(pipe, self._keys, [event], self._maxlen)
            results = await pipe.execute()
        return str(results[0])

    async def aclose(self) -> None:
        """Release the Redis connections."""
        await self._redis.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class HttpReporter:
    """Publishes progress through a gateway's HTTP API, blocking."""

    def __init__(
        self, url: str = "http://127.0.0.1:8080", *, api_key: str | None = None, timeout: float = 10
    ) -> None:
        self._endpoint = url.rstrip("/") + "/api/workflows/progress"
        self._api_key = api_key
        self._timeout = timeout

    def report(
        self,
        session_id: str,
        workflow_type: str,
        step: str,
        progress: float,
        metadata: dict[str, Any] | None = None,
        status: Status | None = None,
        error: str | None = None,
    ) -> str:
        """Publish one event and return its stream id."""
        event = build_event(session_id, workflow_type, step, progress, metadata, status, error)
        answer = self._post(event.model_dump_json(exclude_none=True).encode())
        return str(answer["id"])

    def _post(self, body: bytes) -> dict[str, Any]:
        headers = {"content-type": "application/json"}
        if self._api_key:
            headers["authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(self._endpoint, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                answer: dict[str, Any] = json.loads(response.read())
                return answer
        except urllib.error.HTTPError as exc:
            raise ReportError(
                f"gateway answered {exc.code}: {exc.read().decode(errors='replace')}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ReportError(f"gateway unreachable at {self._endpoint}: {exc}") from None

"""Reporters: how a Python worker publishes progress.

:class:`Reporter` (blocking) and :class:`AsyncReporter` (asyncio) write
straight to the Redis streams through the same publish function the gateway
uses, so their entries are indistinguishable from HTTP-published ones.
:class:`HttpReporter` posts to a gateway, for workers that cannot reach Redis.
Each one retries an unreachable target with backoff, keeps undelivered events
in a bounded buffer (see :mod:`relay.retry`), and learns from every report
whether the session's cancellation was requested.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Any, Self

import redis
import redis.asyncio
import redis.exceptions

from relay.batching import Batcher
from relay.keys import Keys
from relay.models import ProgressEvent, Status
from relay.retry import (
    PendingBuffer,
    ReportError,
    RetryPolicy,
    TransientError,
    send_with_retry,
    send_with_retry_async,
)
from relay.streams import PUBLISH_SCRIPT, Receipt, StreamStore, now_ms, publish_args, receipts
from relay.worker_session import AsyncReportingSession, ReportingSession

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_MAXLEN = 10_000
UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
RETRYABLE_HTTP = frozenset({429, 502, 503, 504})


def build_event(
    session_id: str,
    workflow_type: str,
    step: str,
    progress: float,
    metadata: dict[str, Any] | None = None,
    status: Status | None = None,
    error: str | None = None,
) -> ProgressEvent:
    """Validate reporter arguments with the same rules as every other edge.

    The event is stamped with the time of the report, not of a later retry.
    """
    fields: dict[str, Any] = {"metadata": metadata or {}, "ts": now_ms()}
    if status is not None:
        fields["status"] = status
    if error is not None:
        fields["error"] = error
    return ProgressEvent(
        session_id=session_id, workflow_type=workflow_type, step=step, progress=progress, **fields
    )


class BlockingReporter(ABC):
    """What the blocking reporters share: ``report`` and ``session`` over ``publish``."""

    @abstractmethod
    def publish(self, event: ProgressEvent) -> Receipt:
        """Publish a validated event; raises ReportError once retrying is over."""

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
        return self.publish(event).id

    def session(
        self, workflow_type: str, session_id: str | None = None, *, raise_on_cancel: bool = False
    ) -> ReportingSession:
        """A context manager reporting one session's steps and its end."""
        return ReportingSession(self, workflow_type, session_id, raise_on_cancel=raise_on_cancel)


class Reporter(BlockingReporter):
    """Publishes progress straight to Redis, blocking.

    >>> with Reporter("redis://localhost:6379/0") as reporter:
    ...     reporter.report("s1", "map", "analyzing", 45, {"details": "forests"})
    '1700000000000-0'
    """

    def __init__(
        self,
        redis_url: str = DEFAULT_REDIS_URL,
        *,
        prefix: str = "",
        maxlen: int = DEFAULT_MAXLEN,
        retry: RetryPolicy | None = None,
        client: redis.Redis | None = None,
    ) -> None:
        self._redis = client or redis.Redis.from_url(
            redis_url, decode_responses=True, socket_connect_timeout=2, socket_timeout=5
        )
        self._publish_script = self._redis.register_script(PUBLISH_SCRIPT)
        self._keys = Keys(prefix)
        self._maxlen = maxlen
        self._retry = retry or RetryPolicy()
        self.pending = PendingBuffer(self._retry.buffer_size)

    def publish(self, event: ProgressEvent) -> Receipt:
        """Publish a validated event; raises ReportError once retrying is over."""
        (receipt,) = send_with_retry(self._send, [event.stamped()], self._retry, self.pending)
        return receipt

    def _send(self, events: list[ProgressEvent]) -> list[Receipt]:
        try:
            answer = self._publish_script(
                keys=[], args=publish_args(self._keys, events, self._maxlen)
            )
            return receipts(answer, len(events))
        except UNREACHABLE as exc:
            raise TransientError(f"Redis unreachable: {exc}") from None

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
    """Publishes progress straight to Redis from asyncio code.

    Reports made concurrently share one script call, so many
    coroutines reporting at once cost few round trips.
    """

    def __init__(
        self,
        redis_url: str = DEFAULT_REDIS_URL,
        *,
        prefix: str = "",
        maxlen: int = DEFAULT_MAXLEN,
        retry: RetryPolicy | None = None,
        max_batch: int = 1_000,
        client: redis.asyncio.Redis | None = None,
    ) -> None:
        self._redis = client or redis.asyncio.Redis.from_url(
            redis_url, decode_responses=True, socket_connect_timeout=2, socket_timeout=5
        )
        self._store = StreamStore(self._redis, Keys(prefix), maxlen=maxlen)
        self._retry = retry or RetryPolicy()
        self.pending = PendingBuffer(self._retry.buffer_size)
        self._batcher: Batcher[Receipt] = Batcher(self._send_retrying, max_batch=max_batch)

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
        return (await self.publish(event)).id

    async def publish(self, event: ProgressEvent) -> Receipt:
        """Publish a validated event; raises ReportError once retrying is over."""
        (receipt,) = await self._batcher.submit([event.stamped()])
        return receipt

    async def _send_retrying(self, events: list[ProgressEvent]) -> list[Receipt]:
        return await send_with_retry_async(self._send, events, self._retry, self.pending)

    async def _send(self, events: list[ProgressEvent]) -> list[Receipt]:
        try:
            return await self._store.write(events)
        except UNREACHABLE as exc:
            raise TransientError(f"Redis unreachable: {exc}") from None

    def session(
        self, workflow_type: str, session_id: str | None = None, *, raise_on_cancel: bool = False
    ) -> AsyncReportingSession:
        """An async context manager reporting one session's steps and its end."""
        return AsyncReportingSession(
            self, workflow_type, session_id, raise_on_cancel=raise_on_cancel
        )

    async def aclose(self) -> None:
        """Wait for reports in flight, then release the Redis connections."""
        await self._batcher.drain()
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


class HttpReporter(BlockingReporter):
    """Publishes progress through a gateway's HTTP API, blocking."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8080",
        *,
        api_key: str | None = None,
        timeout: float = 10,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._base = url.rstrip("/") + "/api/workflows/progress"
        self._api_key = api_key
        self._timeout = timeout
        self._retry = retry or RetryPolicy()
        self.pending = PendingBuffer(self._retry.buffer_size)

    def publish(self, event: ProgressEvent) -> Receipt:
        """Publish a validated event; raises ReportError once retrying is over."""
        (receipt,) = send_with_retry(self._send, [event], self._retry, self.pending)
        return receipt

    def _send(self, events: list[ProgressEvent]) -> list[Receipt]:
        if len(events) == 1:
            answer = self._post(self._base, events[0].model_dump(exclude_none=True))
            return [Receipt(str(answer["id"]), bool(answer.get("cancel_requested")))]
        bodies = [event.model_dump(exclude_none=True) for event in events]
        answer = self._post(self._base + "/batch", bodies)
        cancelled = set(answer.get("cancel_requested", ()))
        return [
            Receipt(str(entry_id), event.session_id in cancelled)
            for entry_id, event in zip(answer["ids"], events, strict=True)
        ]

    def _post(self, url: str, body: Any) -> dict[str, Any]:
        headers = {"content-type": "application/json"}
        if self._api_key:
            headers["authorization"] = f"Bearer {self._api_key}"
        data = json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                answer: dict[str, Any] = json.loads(response.read())
                return answer
        except urllib.error.HTTPError as exc:
            reason = exc.read().decode(errors="replace")
            message = f"gateway answered {exc.code}: {reason}"
            if exc.code in RETRYABLE_HTTP:
                raise TransientError(message) from None
            raise ReportError(message) from None
        except (urllib.error.URLError, OSError) as exc:
            raise TransientError(f"gateway unreachable at {url}: {exc}") from None

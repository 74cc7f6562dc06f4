"""How reporters ride out an unreachable Redis or gateway: backoff, then a bounded buffer.

A report that cannot be delivered is retried with backoff for ``retry_for``
seconds. If it still fails, the reporter raises :class:`ReportError` and keeps
the event in a bounded buffer; the next report that gets through sends the
buffered events first, in order. When the buffer is full the oldest event is
dropped (and logged), so a worker never blocks forever nor grows without bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from relay.models import ProgressEvent

logger = logging.getLogger(__name__)

T = TypeVar("T")

BACKOFF_START = 0.05
BACKOFF_CAP = 2.0


class ReportError(RuntimeError):
    """A report was not accepted; the message says why."""


class TransientError(Exception):
    """A failure worth retrying (the store or gateway is unreachable or busy)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long to retry one report, and how many undelivered events to keep."""

    retry_for: float = 10.0
    buffer_size: int = 1_000


class PendingBuffer:
    """Events that could not be delivered yet, oldest first, bounded."""

    def __init__(self, size: int) -> None:
        self._events: deque[ProgressEvent] = deque()
        self._size = size
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._events)

    def with_pending(self, events: list[ProgressEvent]) -> list[ProgressEvent]:
        """What to send now: everything pending, then ``events``."""
        return [*self._events, *events]

    def sent(self) -> None:
        """The pending events went out with the last send."""
        self._events.clear()

    def keep(self, events: list[ProgressEvent]) -> None:
        """Hold ``events`` for the next send, dropping the oldest beyond the bound."""
        self._events.extend(events)
        while len(self._events) > self._size:
            lost = self._events.popleft()
            self.dropped += 1
            logger.warning(
                "report buffer full: dropped %s of session %s", lost.step, lost.session_id
            )


class Attempt:
    """One report's retry budget: pending events go first, failures back off, then give up."""

    def __init__(
        self, events: list[ProgressEvent], policy: RetryPolicy, buffer: PendingBuffer
    ) -> None:
        self.events = events
        self.batch = buffer.with_pending(events)
        self._policy = policy
        self._buffer = buffer
        self._deadline = time.monotonic() + policy.retry_for
        self._delay = BACKOFF_START

    def failed(self, exc: TransientError) -> float:
        """Seconds to wait before trying again; raises ReportError once time is up."""
        delay = self._delay
        if time.monotonic() + delay > self._deadline:
            self._buffer.keep(self.events)
            raise ReportError(
                f"{exc}; gave up after {self._policy.retry_for:g}s, "
                f"{len(self._buffer)} event(s) kept to resend with the next report"
            ) from None
        self._delay = min(delay * 2, BACKOFF_CAP)
        return delay

    def succeeded(self, answers: list[T]) -> list[T]:
        """The answers for this report's own events (pending ones were sent first)."""
        self._buffer.sent()
        return answers[len(self.batch) - len(self.events) :]


def send_with_retry(
    send: Callable[[list[ProgressEvent]], list[T]],
    events: list[ProgressEvent],
    policy: RetryPolicy,
    buffer: PendingBuffer,
) -> list[T]:
    """Send pending events and ``events``; answers what ``send`` answered for ``events``."""
    attempt = Attempt(events, policy, buffer)
    while True:
        try:
            return attempt.succeeded(send(attempt.batch))
        except TransientError as exc:
            time.sleep(attempt.failed(exc))


async def send_with_retry_async(
    send: Callable[[list[ProgressEvent]], Awaitable[list[T]]],
    events: list[ProgressEvent],
    policy: RetryPolicy,
    buffer: PendingBuffer,
) -> list[T]:
    """The asyncio form of :func:`send_with_retry`."""
    attempt = Attempt(events, policy, buffer)
    while True:
        try:
            return attempt.succeeded(await send(attempt.batch))
        except TransientError as exc:
            await asyncio.sleep(attempt.failed(exc))

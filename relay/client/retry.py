"""How reporters ride out an unreachable Redis or gateway: backoff, then a bounded buffer.

A report that cannot be delivered is retried with backoff for ``retry_for``
seconds. If it still fails, the reporter raises :class:`ReportError` and keeps
the event in a bounded buffer; the next report that gets through sends the
buffered events first, in order. When the buffer is full the oldest events
are dropped (and logged), so a worker never blocks forever nor grows without
bound.

Events travel in parcels, each under an idempotency key of its own (see
:mod:`relay.protocol.idempotency`) that every retry of it sends again, so a parcel
that was written although its answer was lost is not written twice. Once a
parcel may have been written it is *sealed*: it is only ever sent again as it
is, under its key. Events refused for good (the target says they are wrong,
not that it is unwell) are dropped from the buffer with a logged, counted
reason, so they never hold up the reports after them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from relay.protocol.event import ProgressEvent
from relay.protocol.idempotency import new_key

logger = logging.getLogger(__name__)

T = TypeVar("T")

BACKOFF_START = 0.05
BACKOFF_CAP = 2.0


class ReportError(RuntimeError):
    """A report was not accepted; the message says why."""


class TransientError(Exception):
    """A failure worth retrying (the store or gateway is unreachable or busy).

    ``maybe_written`` is False only when the events certainly did not arrive
    (the connection was refused, or the target said so); the parcel may then
    be sent again in another shape.
    """

    def __init__(self, message: str, *, maybe_written: bool = True) -> None:
        super().__init__(message)
        self.maybe_written = maybe_written


class Refused(Exception):
    """The target refused a parcel for good: sending it again would be refused again.

    ``code`` names the reason (the gateway's error code). ``divisible`` says
    the fault may lie with one of several events, so they are sent apart to
    find which; otherwise the whole parcel is at fault.
    """

    def __init__(self, code: str, message: str, *, divisible: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.divisible = divisible


@dataclass(eq=False, slots=True)
class Parcel:
    """Events sent together under one idempotency key."""

    events: list[ProgressEvent]
    key: str = field(default_factory=new_key)
    sealed: bool = False


Outcome = list[T] | Refused
Send = Callable[[list[Parcel]], Sequence[Outcome[T]]]
AsyncSend = Callable[[list[Parcel]], Awaitable[Sequence[Outcome[T]]]]


def _as_they_are(parcels: list[Parcel]) -> list[Parcel]:
    return parcels


@dataclass(frozen=True, slots=True)
class Packing:
    """How a target takes parcels: all in one call, or one a call after ``pack`` regrouped them.

    ``pack`` may regroup unsealed parcels (say, into chunks within the
    target's limits) but must leave sealed ones as they are.
    """

    one_per_call: bool = False
    pack: Callable[[list[Parcel]], list[Parcel]] = _as_they_are


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long to retry one report, and how many undelivered events to keep."""

    retry_for: float = 10.0
    buffer_size: int = 1_000


class PendingBuffer:
    """Events that could not be delivered yet, oldest first, bounded.

    ``dropped`` counts events lost to the bound; ``refused`` counts, per
    reason, buffered events the target refused for good.
    """

    def __init__(self, size: int) -> None:
        self._parcels: deque[Parcel] = deque()
        self._size = size
        self.dropped = 0
        self.refused: dict[str, int] = {}

    def __len__(self) -> int:
        return sum(len(parcel.events) for parcel in self._parcels)

    def take(self) -> list[Parcel]:
        """Everything pending, oldest first; the buffer is left empty."""
        parcels = list(self._parcels)
        self._parcels.clear()
        return parcels

    def keep(self, parcels: list[Parcel]) -> None:
        """Hold ``parcels`` for the next send, dropping the oldest events beyond the bound.

        A sealed parcel is dropped whole, never cut: sent again in another
        shape, it could be written twice.
        """
        self._parcels.extend(parcels)
        excess = len(self) - self._size
        while excess > 0 and self._parcels:
            oldest = self._parcels[0]
            if oldest.sealed or len(oldest.events) <= excess:
                self._parcels.popleft()
                lost = oldest.events
            else:
                lost, oldest.events = oldest.events[:excess], oldest.events[excess:]
            excess -= len(lost)
            self.dropped += len(lost)
            logger.warning(
                "report buffer full: dropped %d event(s), the oldest %s of session %s",
                len(lost),
                lost[0].step,
                lost[0].session_id,
            )

    def refuse(self, events: list[ProgressEvent], refused: Refused) -> None:
        """Count and log buffered ``events`` the target refused for good."""
        self.refused[refused.code] = self.refused.get(refused.code, 0) + len(events)
        logger.warning(
            "dropped %d buffered event(s) the target refused (%s), the first of session %s: %s",
            len(events),
            refused.code,
            events[0].session_id,
            refused,
        )


class Delivery(Generic[T]):
    """One report's way out: pending parcels first, then its own; back off, then give up."""

    def __init__(
        self,
        events: list[ProgressEvent],
        policy: RetryPolicy,
        buffer: PendingBuffer,
        packing: Packing,
    ) -> None:
        self.events = events
        self._own = {id(event) for event in events}
        self._policy = policy
        self._buffer = buffer
        self._packing = packing
        self._queue = packing.pack([*buffer.take(), Parcel(list(events))])
        self._answers: dict[int, T | Refused] = {}
        self._deadline = time.monotonic() + policy.retry_for
        self._delay = BACKOFF_START

    def next_call(self) -> list[Parcel] | None:
        """The parcels to send in the next call, or None once all were delivered."""
        if not self._queue:
            return None
        return self._queue[:1] if self._packing.one_per_call else list(self._queue)

    def delivered(self, parcels: list[Parcel], outcomes: Sequence[Outcome[T]]) -> None:
        """Take the answers of one call: one outcome per parcel sent."""
        del self._queue[: len(parcels)]
        retry: list[Parcel] = []
        for parcel, outcome in zip(parcels, outcomes, strict=True):
            if not isinstance(outcome, Refused):
                self._answers.update(zip(map(id, parcel.events), outcome, strict=True))
            elif outcome.divisible and len(parcel.events) > 1:
                # Refused for one event's sake: halves, until that one is alone.
                half = len(parcel.events) // 2
                retry += [Parcel(parcel.events[:half]), Parcel(parcel.events[half:])]
            else:
                self._refused(parcel.events, outcome)
        self._queue[:0] = retry

    def _refused(self, events: list[ProgressEvent], refused: Refused) -> None:
        self._answers.update((id(event), refused) for event in events)
        pending = [event for event in events if id(event) not in self._own]
        if pending:
            self._buffer.refuse(pending, refused)

    def failed(self, parcels: list[Parcel], exc: TransientError) -> float:
        """Seconds to wait before trying again; raises ReportError once time is up."""
        if exc.maybe_written:
            for parcel in parcels:
                parcel.sealed = True
        delay = self._delay
        if time.monotonic() + delay > self._deadline:
            self._buffer.keep(self._queue)
            self._queue = []
            raise ReportError(
                f"{exc}; gave up after {self._policy.retry_for:g}s, "
                f"{len(self._buffer)} event(s) kept to resend with the next report"
            ) from None
        logger.debug("report not delivered (%s); trying again in %.2fs", exc, delay)
        self._delay = min(delay * 2, BACKOFF_CAP)
        return delay

    @contextmanager
    def keeping_pending(self) -> Iterator[None]:
        """On an unexpected failure, put the pending parcels not sent yet back in the buffer."""
        try:
            yield
        except BaseException:
            own = [p for p in self._queue if all(id(e) in self._own for e in p.events)]
            self._buffer.keep([p for p in self._queue if p not in own])
            self._queue = []
            raise

    def answers(self) -> list[T]:
        """The answers for this report's own events; ReportError if the target refused one."""
        found: list[T] = []
        for event in self.events:
            answer = self._answers[id(event)]
            if isinstance(answer, Refused):
                raise ReportError(str(answer))
            found.append(answer)
        return found


def send_with_retry(
    send: Send[T],
    events: list[ProgressEvent],
    policy: RetryPolicy,
    buffer: PendingBuffer,
    packing: Packing | None = None,
) -> list[T]:
    """Send pending events and ``events``; answers what ``send`` answered for ``events``."""
    delivery: Delivery[T] = Delivery(events, policy, buffer, packing or Packing())
    with delivery.keeping_pending():
        while (parcels := delivery.next_call()) is not None:
            try:
                outcomes = send(parcels)
            except TransientError as exc:
                time.sleep(delivery.failed(parcels, exc))
            else:
                delivery.delivered(parcels, outcomes)
    return delivery.answers()


async def send_with_retry_async(
    send: AsyncSend[T],
    events: list[ProgressEvent],
    policy: RetryPolicy,
    buffer: PendingBuffer,
    packing: Packing | None = None,
) -> list[T]:
    """The asyncio form of :func:`send_with_retry`."""
    delivery: Delivery[T] = Delivery(events, policy, buffer, packing or Packing())
    with delivery.keeping_pending():
        while (parcels := delivery.next_call()) is not None:
            try:
                outcomes = await send(parcels)
            except TransientError as exc:
                await asyncio.sleep(delivery.failed(parcels, exc))
            else:
                delivery.delivered(parcels, outcomes)
    return delivery.answers()

"""A worker's view of one session: report steps, end it properly, notice cancellation.

``with reporter.session("map") as session:`` reports each step the body
gives, then ``completed`` when the body returns, ``failed`` (with the
exception's message) when it raises, and ``cancelled`` when it raises
:class:`CancelRequested` (which the ``with`` then swallows: stopping on request
is a normal way for a workflow to end).

While the body runs, the session keeps itself alive: whenever it has made no
report for ``heartbeat_interval`` seconds (by default
:func:`~relay.protocol.liveness.heartbeat_interval` of the default stall
time), a background thread (blocking) or task (asyncio) publishes its latest
report again, unchanged but for a fresh ``ts``. A gateway takes such a repeat
as a heartbeat: the session is not stalled, and subscribers are not sent it.
A heartbeat that fails is logged and tried again an interval later; one whose
answer says a cancellation was requested sets :attr:`cancel_requested`, so the
body's next report raises :class:`CancelRequested` (with ``raise_on_cancel``).
Heartbeats end before the session's final event is published.

A job that failed and will be tried again says so with ``session.retry(exc)``
inside the body: the session becomes ``retrying`` with the new attempt's
number and the error, and stays open for that attempt's reports. The caller
decides what is worth retrying (the exceptions it catches), so no exception is
retried behind its back.

A session may declare its steps up front: with ``plan=[("analyzing", 1),
("generating", 6)]`` (or plain names, each weighing 1) its first event
carries the plan, and each ``session.report(step, progress)`` then gives that
step's own progress; the gateways work out the whole workflow's from the
weights (see :mod:`relay.protocol.plans`).

A workflow that fans out starts child sessions: ``session.child("tile",
weight=2)`` opens a session of its own whose events name this one as their
parent, and the gateways show the parent's progress as its children's
aggregate while it reports none of its own (see :mod:`relay.protocol.children`).
A cancel of the parent reaches each child through its own session, as any cancel.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from types import TracebackType
from typing import Any, Protocol, Self

from relay.client.retry import ReportError
from relay.protocol.entries import Receipt
from relay.protocol.event import MAX_ERROR_CHARS, ProgressEvent
from relay.protocol.liveness import heartbeat_interval
from relay.protocol.plans import PlanSpec, PlanStep, plan_steps

# Seconds between heartbeats unless a session is told otherwise.
DEFAULT_HEARTBEAT_INTERVAL = heartbeat_interval()

logger = logging.getLogger(__name__)


class CancelRequested(Exception):
    """Someone asked for this session to stop; raise it (or let a report raise it) to stop."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"cancellation of session {session_id} was requested")
        self.session_id = session_id


class Publisher(Protocol):
    """What a blocking reporter offers a session."""

    def publish(self, event: ProgressEvent) -> Receipt: ...


class AsyncPublisher(Protocol):
    """What an asyncio reporter offers a session."""

    async def publish(self, event: ProgressEvent) -> Receipt: ...


def describe(exc: BaseException) -> str:
    """An exception as a session's ``error``."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:MAX_ERROR_CHARS]


def heartbeat_name(session_id: str) -> str:
    """The name of the thread or task that sends a session's heartbeats."""
    return f"relay-heartbeat-{session_id}"


class _SessionState:
    """The bookkeeping shared by the blocking and asyncio sessions."""

    def __init__(
        self,
        workflow_type: str,
        session_id: str | None,
        raise_on_cancel: bool,
        heartbeat_interval: float | None,
        owner: str | None = None,
        plan: PlanSpec | None = None,
        parent_id: str | None = None,
        weight: float | None = None,
    ) -> None:
        self.workflow_type = workflow_type
        # Sent with every event until one carrying it is published.
        self.plan: list[PlanStep] | None = None if plan is None else plan_steps(plan)
        self.session_id = session_id or uuid.uuid4().hex
        # Sent with every event: any one of them may be the first the gateways keep.
        self.owner = owner
        # Sent with every event, as the owner is: the parent and this session's share of it.
        self.parent_id = parent_id
        self.weight = weight
        self.raise_on_cancel = raise_on_cancel
        if heartbeat_interval is not None and heartbeat_interval < 0:
            raise ValueError(f"heartbeat_interval must not be negative: {heartbeat_interval}")
        self.heartbeat_interval = heartbeat_interval or None
        self.step = "started"
        self.progress = 0.0
        self.cancel_requested = False
        self.attempt = 1
        # The report a heartbeat repeats, and when the session was last heard.
        self.latest: ProgressEvent | None = None
        self.reported_at = time.monotonic()

    def child(
        self,
        workflow_type: str,
        session_id: str | None = None,
        *,
        weight: float | None = None,
        heartbeat_interval: float | None = DEFAULT_HEARTBEAT_INTERVAL,
        plan: PlanSpec | None = None,
    ) -> Self:
        """A session of this one's children: its events name this session as their parent.

        ``weight`` is its share of this session's progress (1 when not given);
        it reports through the same reporter, for the same owner, and stops
        on cancel as this one does.
        """
        options = {
            "raise_on_cancel": self.raise_on_cancel,
            "heartbeat_interval": heartbeat_interval,
            "owner": self.owner,
            "plan": plan,
            "parent_id": self.session_id,
            "weight": weight,
        }
        return self._spawn(workflow_type, session_id, options)

    def _spawn(self, workflow_type: str, session_id: str | None, options: dict[str, Any]) -> Self:
        """A session like this one, of the same reporter (each kind says how it is made)."""
        raise NotImplementedError

    def event(self, step: str, progress: float, **fields: Any) -> ProgressEvent:
        """A validated event of this session; once it was retried, of its current attempt."""
        if self.attempt > 1:
            fields.setdefault("attempt", self.attempt)
        if self.owner is not None:
            fields.setdefault("owner", self.owner)
        if self.plan is not None:
            fields.setdefault("plan", self.plan)
        if self.parent_id is not None:
            fields.setdefault("parent_id", self.parent_id)
        if self.weight is not None:
            fields.setdefault("weight", self.weight)
        return ProgressEvent(
            session_id=self.session_id,
            workflow_type=self.workflow_type,
            step=step,
            progress=progress,
            **fields,
        )

    def retry_event(self, error: BaseException | str) -> ProgressEvent:
        """The ``retrying`` event that starts the next attempt, with the failed one's error."""
        text = error[:MAX_ERROR_CHARS] if isinstance(error, str) else describe(error)
        self.attempt += 1
        return self.event(self.step, self.progress, status="retrying", error=text)

    def noted(self, event: ProgressEvent, receipt: Receipt) -> str:
        """Remember what was reported; raise CancelRequested if asked to.

        A cancellation a heartbeat learned of counts as much as this report's.
        """
        self.latest, self.reported_at = event, time.monotonic()
        self.step, self.progress = event.step, event.progress
        if event.plan is not None:
            self.plan = None  # the gateways hold it from now on
        self.heard(receipt)
        if self.cancel_requested and self.raise_on_cancel and not event.terminal:
            raise CancelRequested(self.session_id)
        return receipt.id

    def heard(self, receipt: Receipt) -> None:
        """Take note of a cancellation a publish answer tells of."""
        if receipt.cancel_requested:
            self.cancel_requested = True

    def until_heartbeat(self, interval: float) -> float:
        """Seconds until the next heartbeat is due, for heartbeats every ``interval``."""
        if self.latest is None:
            return interval
        return max(0.0, self.reported_at + interval - time.monotonic())

    def heartbeat(self, interval: float) -> ProgressEvent | None:
        """The event a heartbeat publishes now, or None when none is due.

        Due when nothing was reported for the interval, and only once the body
        reported something: before that there is nothing to repeat. The timer
        restarts whether or not the heartbeat then gets through, so a failed
        one is tried again an interval later rather than at once.
        """
        if self.latest is None or self.until_heartbeat(interval) > 0:
            return None
        self.reported_at = time.monotonic()
        return self.latest.model_copy(update={"ts": None})

    def heartbeat_failed(self, exc: Exception) -> None:
        """A failed heartbeat is the body's business only through its next report."""
        logger.warning("heartbeat of session %s failed: %s", self.session_id, exc)

    def raise_if_cancel_requested(self) -> None:
        """Raise CancelRequested if a report has learned of a cancellation request."""
        if self.cancel_requested:
            raise CancelRequested(self.session_id)

    def closing_failed(self, exc: BaseException | None, error: ReportError) -> bool:
        """Whether a failed final report should be raised: not over the body's own error."""
        if exc is None:
            return True
        logger.warning("could not report the end of session %s: %s", self.session_id, error)
        return False

    def final_event(self, exc: BaseException | None) -> ProgressEvent:
        """How the session ends, given how the ``with`` body ended."""
        if exc is None:
            return self.event(self.step, 100, status="completed")
        if isinstance(exc, CancelRequested) or not isinstance(exc, Exception):
            # Cancelled on request, or the worker itself was interrupted.
            return self.event(self.step, self.progress, status="cancelled")
        return self.event(self.step, self.progress, status="failed", error=describe(exc))


class ReportingSession(_SessionState):
    """One session reported through a blocking reporter; use as a context manager."""

    def __init__(
        self,
        reporter: Publisher,
        workflow_type: str,
        session_id: str | None = None,
        *,
        raise_on_cancel: bool = False,
        heartbeat_interval: float | None = DEFAULT_HEARTBEAT_INTERVAL,
        owner: str | None = None,
        plan: PlanSpec | None = None,
        parent_id: str | None = None,
        weight: float | None = None,
    ) -> None:
        super().__init__(
            workflow_type,
            session_id,
            raise_on_cancel,
            heartbeat_interval,
            owner,
            plan,
            parent_id,
            weight,
        )
        self._reporter = reporter
        # Held from choosing an event until it is published and noted, so that
        # a heartbeat never repeats a report after a newer one was published.
        self._publishing = threading.Lock()
        self._ended = threading.Event()
        self._beating: threading.Thread | None = None

    def _spawn(self, workflow_type: str, session_id: str | None, options: dict[str, Any]) -> Self:
        return type(self)(self._reporter, workflow_type, session_id, **options)

    def report(self, step: str, progress: float, metadata: dict[str, Any] | None = None) -> str:
        """Report a step; returns its stream id."""
        event = self.event(step, progress, metadata=metadata or {})
        with self._publishing:
            return self.noted(event, self._reporter.publish(event))

    def retry(self, error: BaseException | str) -> str:
        """Report that this attempt failed with ``error`` and the next one starts.

        The session stays open: it is ``retrying``, with the new attempt's
        number, and the reports that follow carry that number. Returns the
        event's stream id.
        """
        with self._publishing:
            event = self.retry_event(error)
            return self.noted(event, self._reporter.publish(event))

    def _beat(self, interval: float) -> None:
        while not self._ended.wait(self.until_heartbeat(interval)):
            with self._publishing:
                event = self.heartbeat(interval)
                if event is None:
                    continue
                try:
                    self.heard(self._reporter.publish(event))
                except Exception as exc:
                    self.heartbeat_failed(exc)

    def __enter__(self) -> ReportingSession:
        if self.heartbeat_interval is not None:
            self._beating = threading.Thread(
                target=self._beat,
                args=(self.heartbeat_interval,),
                name=heartbeat_name(self.session_id),
                daemon=True,
            )
            self._beating.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._ended.set()
        if self._beating is not None:
            self._beating.join()
        try:
            self._reporter.publish(self.final_event(exc))
        except ReportError as error:
            if self.closing_failed(exc, error):
                raise
        return isinstance(exc, CancelRequested)


class AsyncReportingSession(_SessionState):
    """One session reported through an asyncio reporter; use as an async context manager."""

    def __init__(
        self,
        reporter: AsyncPublisher,
        workflow_type: str,
        session_id: str | None = None,
        *,
        raise_on_cancel: bool = False,
        heartbeat_interval: float | None = DEFAULT_HEARTBEAT_INTERVAL,
        owner: str | None = None,
        plan: PlanSpec | None = None,
        parent_id: str | None = None,
        weight: float | None = None,
    ) -> None:
        super().__init__(
            workflow_type,
            session_id,
            raise_on_cancel,
            heartbeat_interval,
            owner,
            plan,
            parent_id,
            weight,
        )
        self._reporter = reporter
        # As for the blocking session: a heartbeat never overtakes a newer report.
        self._publishing = asyncio.Lock()
        self._ended = asyncio.Event()
        self._beating: asyncio.Task[None] | None = None

    def _spawn(self, workflow_type: str, session_id: str | None, options: dict[str, Any]) -> Self:
        return type(self)(self._reporter, workflow_type, session_id, **options)

    async def report(
        self, step: str, progress: float, metadata: dict[str, Any] | None = None
    ) -> str:
        """Report a step; returns its stream id."""
        event = self.event(step, progress, metadata=metadata or {})
        async with self._publishing:
            return self.noted(event, await self._reporter.publish(event))

    async def retry(self, error: BaseException | str) -> str:
        """As :meth:`ReportingSession.retry`: report a failed attempt and start the next."""
        async with self._publishing:
            event = self.retry_event(error)
            return self.noted(event, await self._reporter.publish(event))

    async def _beat(self, interval: float) -> None:
        while not await self._ended_within(self.until_heartbeat(interval)):
            async with self._publishing:
                event = self.heartbeat(interval)
                if event is None:
                    continue
                try:
                    self.heard(await self._reporter.publish(event))
                except Exception as exc:
                    self.heartbeat_failed(exc)

    async def _ended_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._ended.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def __aenter__(self) -> AsyncReportingSession:
        if self.heartbeat_interval is not None:
            self._beating = asyncio.create_task(
                self._beat(self.heartbeat_interval), name=heartbeat_name(self.session_id)
            )
        return self

    async def _stop_beating(self) -> None:
        """Let a heartbeat in flight finish, so that none follows the final event."""
        self._ended.set()
        if self._beating is None:
            return
        try:
            await asyncio.shield(self._beating)
        except asyncio.CancelledError:
            self._beating.cancel()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        await self._stop_beating()
        try:
            await self._reporter.publish(self.final_event(exc))
        except ReportError as error:
            if self.closing_failed(exc, error):
                raise
        return isinstance(exc, CancelRequested)

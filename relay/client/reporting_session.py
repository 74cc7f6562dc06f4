"""A worker's view of one session: report steps, end it properly, notice cancellation.

``with reporter.session("map") as session:`` reports each step the body
gives, then ``completed`` when the body returns, ``failed`` (with the
exception's message) when it raises, and ``cancelled`` when it raises
:class:`CancelRequested` (which the ``with`` then swallows: stopping on request
is a normal way for a workflow to end).
"""

from __future__ import annotations

import logging
import uuid
from types import TracebackType
from typing import Any, Protocol

from relay.client.retry import ReportError
from relay.protocol.entries import Receipt
from relay.protocol.event import MAX_ERROR_CHARS, ProgressEvent

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


class _SessionState:
    """The bookkeeping shared by the blocking and asyncio sessions."""

    def __init__(self, workflow_type: str, session_id: str | None, raise_on_cancel: bool) -> None:
        self.workflow_type = workflow_type
        self.session_id = session_id or uuid.uuid4().hex
        self.raise_on_cancel = raise_on_cancel
        self.step = "started"
        self.progress = 0.0
        self.cancel_requested = False

    def event(self, step: str, progress: float, **fields: Any) -> ProgressEvent:
        """A validated event of this session."""
        return ProgressEvent(
            session_id=self.session_id,
            workflow_type=self.workflow_type,
            step=step,
            progress=progress,
            **fields,
        )

    def noted(self, event: ProgressEvent, receipt: Receipt) -> str:
        """Remember what was reported; raise CancelRequested if asked to."""
        self.step, self.progress = event.step, event.progress
        if receipt.cancel_requested:
            self.cancel_requested = True
            if self.raise_on_cancel and not event.terminal:
                raise CancelRequested(self.session_id)
        return receipt.id

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
    ) -> None:
        super().__init__(workflow_type, session_id, raise_on_cancel)
        self._reporter = reporter

    def report(self, step: str, progress: float, metadata: dict[str, Any] | None = None) -> str:
        """Report a step; returns its stream id."""
        event = self.event(step, progress, metadata=metadata or {})
        return self.noted(event, self._reporter.publish(event))

    def __enter__(self) -> ReportingSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
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
    ) -> None:
        super().__init__(workflow_type, session_id, raise_on_cancel)
        self._reporter = reporter

    async def report(
        self, step: str, progress: float, metadata: dict[str, Any] | None = None
    ) -> str:
        """Report a step; returns its stream id."""
        event = self.event(step, progress, metadata=metadata or {})
        return self.noted(event, await self._reporter.publish(event))

    async def __aenter__(self) -> AsyncReportingSession:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        try:
            await self._reporter.publish(self.final_event(exc))
        except ReportError as error:
            if self.closing_failed(exc, error):
                raise
        return isinstance(exc, CancelRequested)

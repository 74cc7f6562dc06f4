"""Publishing on behalf of clients: the checks that need the session view, and cancellation."""

from __future__ import annotations

from collections.abc import Sequence

from relay.context import Relay
from relay.errors import ApiError
from relay.models import ProgressEvent
from relay.streams import Receipt


async def publish_events(relay: Relay, events: Sequence[ProgressEvent]) -> list[Receipt]:
    """Publish unless a session among ``events`` has already ended (409)."""
    for event in events:
        state = relay.view.get(event.session_id)
        if state is not None and state.terminal:
            raise ApiError(
                409,
                f"session {event.session_id!r} has already ended ({state.status})",
                code="session_ended",
            )
    receipts = await relay.store.publish(events)
    for event in events:
        relay.stats.bump(relay.stats.published_by_type, event.workflow_type)
    return receipts


def unknown_session(session_id: str) -> ApiError:
    """The 404 for a session that is not known, or that the caller may not see: alike on purpose."""
    return ApiError(404, f"no recent session {session_id!r}")


async def request_cancel(relay: Relay, session_id: str) -> tuple[Receipt, str]:
    """Publish a ``cancel_requested`` event for a running session; answers its type too.

    The worker learns of it from its next report. Asking again while the
    request is pending answers the same event rather than publishing another.
    """
    state = relay.view.get(session_id)
    if state is None:
        raise unknown_session(session_id)
    if state.terminal:
        raise ApiError(
            409, f"session {session_id!r} has already ended ({state.status})", code="session_ended"
        )
    if state.status == "cancel_requested":
        return Receipt(state.latest.id, True), state.workflow_type
    event = ProgressEvent(
        session_id=session_id,
        workflow_type=state.workflow_type,
        step=state.step,
        progress=state.progress,
        metadata=state.metadata,
        status="cancel_requested",
    )
    (receipt,) = await relay.store.publish([event])
    return receipt, state.workflow_type

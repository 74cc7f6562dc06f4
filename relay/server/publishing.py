"""Publishing on behalf of clients: the checks that need the session view, and cancellation.

The gateway that accepts a publish answers for it at once: the events are
applied to its session view with the ids and ``ts`` written, so a ``GET`` or
a cancel right after the publish finds the session. Routing them to
subscribers stays the reader's job, so nobody receives an event twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from relay.protocol.entries import PUBLISH_BATCH, Publication, Published, Receipt, now_ms
from relay.protocol.event import ProgressEvent
from relay.protocol.idempotency import REUSED, KeyReused
from relay.server.errors import ApiError
from relay.server.gateway import Gateway
from relay.server.session_state import SessionState


async def publish_events(
    gateway: Gateway, events: Sequence[ProgressEvent], idempotency_key: str | None = None
) -> Published:
    """Publish unless a session among ``events`` has already ended (409).

    With ``idempotency_key``, a publication already made under that key is
    answered as it was first (``replayed``) and not written again; the key
    used for other events answers 409 ``idempotency_key_reused``: the request
    is sound in itself, it conflicts with what is recorded under its key.
    """
    stamp = now_ms()
    publication = Publication([event.stamped(stamp) for event in events], idempotency_key)
    try:
        ended = _ended_session(gateway, publication.events)
        if ended is not None:
            # A retry of the publication that ended the session is no conflict.
            replay = await gateway.store.recorded(publication) if idempotency_key else None
            if replay is None:
                raise ended
            return replay
        published = await gateway.store.submit(publication)
    except KeyReused as exc:
        raise ApiError(409, str(exc), code=REUSED) from None
    if not published.replayed:
        _applied(gateway, publication.events, published.receipts, published.entries)
        for event in publication.events:
            gateway.stats.bump(gateway.stats.published_by_type, event.workflow_type)
    return published


def _ended_session(gateway: Gateway, events: Sequence[ProgressEvent]) -> ApiError | None:
    for event in events:
        state = gateway.view.get(event.session_id)
        if state is not None and state.terminal:
            return _session_ended(state)
    return None


def _session_ended(state: SessionState) -> ApiError:
    """The 409 for a publish or cancel that comes after the session ended."""
    return ApiError(
        409,
        f"session {state.session_id!r} has already ended ({state.status})",
        code="session_ended",
    )


def _applied(
    gateway: Gateway,
    events: Sequence[ProgressEvent],
    receipts: list[Receipt],
    entries: Sequence[dict[str, str] | None] = (),
) -> None:
    """Fold what was just written into the view, as the reader will when it reads it back.

    ``entries`` are the fields written for each event, when known: the
    reader then takes the event from here rather than decode it again
    (see :mod:`relay.server.own_entries`), unless it has read past it
    already (its answer can come before the publish's).
    """
    view = gateway.view
    read = gateway.reader.positions
    for index, (event, receipt) in enumerate(zip(events, receipts, strict=True)):
        envelope, shown = view.delivered(receipt.id, event)
        view.apply(envelope, shown, ahead=True)
        fields = entries[index] if index < len(entries) else None
        if fields is None:
            continue
        position = read.get(gateway.keys.stream(event.workflow_type))
        if position is None or envelope.key > position:
            view.own.wrote(event.workflow_type, receipt.id, fields, event)


def unknown_session(session_id: str) -> ApiError:
    """The 404 for a session that is not known, or that the caller may not see: alike on purpose."""
    return ApiError(404, f"no recent session {session_id!r}")


@dataclass(frozen=True, slots=True)
class CancelOutcome:
    """A cancel requested: the session's cancel_requested event, and its children's count."""

    receipt: Receipt
    workflow_type: str
    children: int


async def request_cancel(gateway: Gateway, session_id: str) -> CancelOutcome:
    """Publish a ``cancel_requested`` event for a running session and each of its children.

    The worker learns of it from its next report; each child's worker learns
    it from its own session, as any other. Asking again while the request is
    pending answers the same event rather than publishing another, and a
    child whose cancel is pending gets no second one. ``children`` counts the
    children that have not ended, all now cancelling. Only the session's own
    children are cancelled, not theirs (see relay.protocol.children).
    """
    state = gateway.view.get(session_id)
    if state is None:
        raise unknown_session(session_id)
    if state.terminal:
        raise _session_ended(state)
    if state.cancel is not None:
        receipt = Receipt(state.cancel.id, True)
    else:
        (receipt,) = await _publish_cancels(gateway, [state])
    children = [
        child
        for child_id in (state.children.ongoing_ids() if state.children is not None else ())
        if (child := gateway.view.get(child_id)) is not None and not child.terminal
    ]
    pending = [child for child in children if child.cancel is None]
    for start in range(0, len(pending), PUBLISH_BATCH):
        await _publish_cancels(gateway, pending[start : start + PUBLISH_BATCH])
    return CancelOutcome(receipt, state.workflow_type, len(children))


async def _publish_cancels(gateway: Gateway, states: Sequence[SessionState]) -> list[Receipt]:
    """Publish one ``cancel_requested`` event per session, its latest state kept."""
    stamp = now_ms()
    events = [
        ProgressEvent(
            session_id=state.session_id,
            workflow_type=state.workflow_type,
            step=state.step,
            progress=state.progress,
            metadata=state.metadata,
            status="cancel_requested",
            ts=stamp,
        )
        for state in states
    ]
    receipts = await gateway.store.publish(events)
    _applied(gateway, events, receipts)
    return receipts

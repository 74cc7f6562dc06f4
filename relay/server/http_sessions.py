"""HTTP endpoints about sessions: state, listings, history and cancellation."""

from __future__ import annotations

from itertools import islice
from typing import Annotated, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from relay.protocol.event import Owner, SessionId, Status, WorkflowType
from relay.protocol.keys import event_name
from relay.protocol.stream_ids import StreamId
from relay.server.answers import CancelAnswer
from relay.server.errors import json_response, model_response, raise_validation
from relay.server.gateway import GATEWAY
from relay.server.guards import require_canceller, subscriber_grant
from relay.server.ingest import decode
from relay.server.publishing import request_cancel, unknown_session
from relay.server.session_state import SessionState

MAX_LIST = 1_000

routes = web.RouteTableDef()


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SessionPath(_Input):
    """The session a path names."""

    session_id: SessionId


class _Query(_Input):
    limit: Annotated[int, Field(ge=1, le=MAX_LIST, description="Most items answered.")] = 100


class SessionsQuery(_Query):
    """Filters of the session listing."""

    workflow_type: WorkflowType | None = Field(default=None, description="Sessions of this type.")
    status: Status | None = Field(default=None, description="Sessions in this status.")
    owner: Owner | None = Field(default=None, description="Sessions this user owns.")


class HistoryQuery(_Query):
    """Where a session's history starts (exclusive) and how much of it to return."""

    since: StreamId | None = None


M = TypeVar("M", bound=_Input)


def _validated(model: type[M], fields: dict[str, str]) -> M:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise_validation(exc)


def _query(model: type[M], request: web.Request) -> M:
    # The token is a credential, read by the guards, not a filter.
    return _validated(model, {k: v for k, v in request.query.items() if k != "token"})


def _session_id(request: web.Request) -> str:
    return _validated(SessionPath, dict(request.match_info)).session_id


def _readable_state(request: web.Request) -> SessionState:
    """The session the path names, if it exists and the caller's token covers it.

    Both misses answer the same 404: a token must not learn which sessions
    outside its grant exist.
    """
    session_id = _session_id(request)
    grant = subscriber_grant(request)
    state = request.app[GATEWAY].view.get(session_id)
    if state is None or not grant.allows(state.workflow_type, session_id, state.owner):
        raise unknown_session(session_id)
    return state


def _json_array(items: list[str]) -> web.Response:
    return web.Response(text="[" + ",".join(items) + "]", content_type="application/json")


@routes.get("/api/workflows/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    """Recently seen sessions, most recently updated first."""
    query = _query(SessionsQuery, request)
    grant = subscriber_grant(request)
    view = request.app[GATEWAY].view
    found = []
    listed = view.sessions(
        workflow_type=query.workflow_type, status=query.status, owner=query.owner
    )
    for state in listed:
        if not grant.allows(state.workflow_type, state.session_id, state.owner):
            continue
        found.append(state.as_dict())
        if len(found) >= query.limit:
            break
    return json_response(found)


@routes.get("/api/workflows/sessions/{session_id}")
async def get_session(request: web.Request) -> web.Response:
    """The latest state of one session."""
    return json_response(_readable_state(request).as_dict())


@routes.get("/api/workflows/sessions/{session_id}/events")
async def session_events(request: web.Request) -> web.Response:
    """A session's latest events, oldest first, in the WebSocket frame shape.

    The session view remembers the ids of each session's latest events
    (``session_history`` of them), and exactly those entries are read: the
    cost depends on the session, never on the length of its type's stream.
    """
    gateway = request.app[GATEWAY]
    query = _query(HistoryQuery, request)
    state = _readable_state(request)
    session_id = state.session_id
    entry_ids = list(islice(state.history.after(query.since), query.limit))
    entries = await gateway.store.entries(gateway.keys.stream(state.workflow_type), entry_ids)
    # An id may name another entry by now, if Redis lost its data; skip what is not the session's.
    frames = [
        envelope.frame
        for envelope, _ in decode(state.workflow_type, entries, gateway.view)
        if envelope.session_id == session_id
    ]
    return _json_array(frames)


@routes.post("/api/workflows/sessions/{session_id}/cancel")
async def cancel_session(request: web.Request) -> web.Response:
    """Ask the worker running a session to stop; it learns so from its next report.

    Needs a publisher key, or a token with the cancel claim covering the session.
    """
    gateway = request.app[GATEWAY]
    session_id = _session_id(request)
    require_canceller(request, session_id)
    outcome = await request_cancel(gateway, session_id)
    answer = CancelAnswer(
        id=outcome.receipt.id,
        event=event_name(outcome.workflow_type),
        session_id=session_id,
        status="cancel_requested",
        children_cancel_requested=outcome.children,
    )
    return model_response(answer, status=202)

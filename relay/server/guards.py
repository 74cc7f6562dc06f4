"""Guards of requests: credentials (see :mod:`relay.server.auth`), rights, rate and capacity."""

from __future__ import annotations

import math
from collections.abc import Collection

from aiohttp import web
from pydantic import ValidationError

from relay.protocol.event import validation_detail
from relay.protocol.frames import Subscribe, SubscriptionKey, parse_query_subscription
from relay.server.auth import (
    OPEN,
    WATCH_ALL,
    AuthError,
    Grant,
    bearer,
    key_matches,
    looks_like_token,
    read_token,
)
from relay.server.client_address import client_address
from relay.server.errors import ApiError
from relay.server.gateway import GATEWAY
from relay.server.publishing import unknown_session
from relay.server.session_state import SessionState
from relay.server.settings import Settings

CHALLENGE = {"WWW-Authenticate": "Bearer"}


def require_publisher(request: web.Request) -> None:
    """Raise 401 without an API key and 403 with a wrong one, when keys are configured."""
    keys = request.app[GATEWAY].settings.publisher_keys
    _require_bearer(request, keys, "an API key", "the API key is not valid", 403)


def require_metrics_token(request: web.Request) -> None:
    """Raise 401 unless the request presents the metrics token, when one is configured."""
    token = request.app[GATEWAY].settings.metrics_token.get_secret_value()
    _require_bearer(
        request,
        (token,) if token else (),
        "the metrics token",
        "the metrics token is not valid",
        401,
    )


def _require_bearer(
    request: web.Request, accepted: tuple[str, ...], what: str, wrong: str, wrong_status: int
) -> None:
    # Nothing configured: nothing to present.
    if not accepted:
        return
    presented = bearer(request.headers.get("Authorization"))
    if presented is None:
        name = what.split()[-1]
        raise ApiError(
            401, f"{what} is required: Authorization: Bearer <{name}>", headers=CHALLENGE
        )
    if not key_matches(presented, accepted):
        raise ApiError(wrong_status, wrong, headers=CHALLENGE if wrong_status == 401 else None)


def limit_publisher(request: web.Request, events: int) -> None:
    """Raise 429 with Retry-After when this publisher is over its event rate.

    A publisher is its API key when it presents a configured one, otherwise its
    address (the client's behind a trusted proxy): any other bearer value is
    made up at will, and must not buy a fresh bucket.
    """
    gateway = request.app[GATEWAY]
    limits = gateway.publisher_limits
    if not limits.limited:
        return
    keys = gateway.settings.publisher_keys
    presented = bearer(request.headers.get("Authorization")) if keys else None
    if presented is not None and key_matches(presented, keys):
        publisher = f"key:{presented}"
    else:
        publisher = f"address:{client_address(request, gateway.settings.proxies)}"
    wait = limits.take(publisher, events)
    if wait > 0:
        retry = str(max(1, math.ceil(wait)))
        raise ApiError(429, "publish rate exceeded, slow down", headers={"Retry-After": retry})


def refusal(request: web.Request, error: ApiError) -> web.Response:
    """A streaming handler's refusal, answered and counted as the error middleware would."""
    request.app[GATEWAY].stats.reject(error.code)
    return error.response()


def query_subscription(query: dict[str, str]) -> Subscribe | None:
    """The subscription a streaming request names in its query string; 422 if invalid."""
    try:
        return parse_query_subscription(query)
    except ValidationError as exc:
        detail = validation_detail(exc)
        raise ApiError(422, "invalid subscription in query", detail=detail) from None


def check_capacity(request: web.Request) -> None:
    """Raise 503 when the gateway holds as many streaming connections as it may."""
    gateway = request.app[GATEWAY]
    settings = gateway.settings
    if len(gateway.sockets) + len(gateway.event_streams) >= settings.max_connections:
        retry = str(settings.retry_after_seconds)
        raise ApiError(
            503, "this gateway is at its connection limit", headers={"Retry-After": retry}
        )


def token_of(request: web.Request) -> str | None:
    """A subscriber token from ``?token=`` or ``Authorization: Bearer``."""
    return request.query.get("token") or bearer(request.headers.get("Authorization"))


def anonymous_grant(settings: Settings) -> Grant:
    """What a client holds without a token, when the gateway needs none to watch.

    Everything, cancelling included, in development (no keys, no secret);
    watching only once publisher keys are configured.
    """
    return OPEN if settings.development else WATCH_ALL


def verify_token(settings: Settings, token: str) -> Grant:
    """Read a subscriber token under the gateway's secret and lifetime limit; raises AuthError."""
    secret = settings.secret
    if secret is None:
        raise AuthError("this gateway accepts no tokens")
    return read_token(token, secret, max_lifetime=settings.max_token_lifetime)


def _token_grant(settings: Settings, token: str) -> Grant:
    try:
        return verify_token(settings, token)
    except AuthError as exc:
        raise ApiError(401, str(exc), headers=CHALLENGE) from None


def subscriber_grant(request: web.Request) -> Grant:
    """What the request's token grants; see :func:`anonymous_grant` without a secret."""
    settings = request.app[GATEWAY].settings
    if settings.secret is None:
        return anonymous_grant(settings)
    token = token_of(request)
    if token is None:
        raise ApiError(
            401, "a token is required: ?token= or Authorization: Bearer", headers=CHALLENGE
        )
    return _token_grant(settings, token)


def check_cancel(grant: Grant, state: SessionState | None, session_id: str) -> None:
    """Raise unless ``grant`` may cancel the session.

    A session the grant may not watch answers 404 like an unknown one, so
    that refusals tell nothing about which sessions exist; one it may watch
    but not cancel answers 403.
    """
    if state is None or not grant.allows(state.workflow_type, session_id, state.owner):
        raise unknown_session(session_id)
    if not grant.allows_cancel(state.workflow_type, session_id, state.owner):
        raise ApiError(403, "the token does not grant cancelling this session", code="forbidden")


def require_canceller(request: web.Request, session_id: str) -> None:
    """Raise unless the request may cancel ``session_id`` (open in development).

    A configured publisher key may cancel any session. Otherwise a token (when
    a secret is configured) must carry the cancel claim and cover the session
    (see :func:`check_cancel`). A bearer value that is neither a key nor
    shaped like a token answers 403 like a wrong key; a bad token 401.
    """
    gateway = request.app[GATEWAY]
    settings = gateway.settings
    if settings.development:
        return
    keys = settings.publisher_keys
    presented = bearer(request.headers.get("Authorization"))
    if presented is not None and keys and key_matches(presented, keys):
        return
    token = token_of(request) if settings.secret is not None else None
    if token is None and presented is None:
        raise ApiError(
            401,
            "an API key or a token that may cancel is required: Authorization: Bearer",
            headers=CHALLENGE,
        )
    if token is None or (keys and not looks_like_token(token)):
        raise ApiError(403, "the API key is not valid")
    grant = _token_grant(settings, token)
    check_cancel(grant, gateway.view.get(session_id), session_id)


def require_grant(grant: Grant, workflow_type: str, session_id: str | None) -> str | None:
    """Raise 403 unless ``grant`` covers the subscription; the owner it is narrowed to, if any."""
    try:
        return grant.scope(workflow_type, session_id)
    except AuthError as exc:
        raise ApiError(403, str(exc), code="forbidden") from None


def check_subscription(
    grant: Grant | None, held: Collection[SubscriptionKey], frame: Subscribe, limit: int
) -> str | None:
    """Raise unless a connection holding ``held`` may add the subscription ``frame`` names.

    Answers the owner the subscription is narrowed to (see :meth:`Grant.scope`), if any.
    """
    if grant is None:
        raise ApiError(403, "the token does not grant this subscription")
    scope = require_grant(grant, frame.workflow_type, frame.session_id)
    if frame.key not in held and len(held) >= limit:
        raise ApiError(
            429, f"at most {limit} subscriptions per connection", code="too_many_subscriptions"
        )
    return scope

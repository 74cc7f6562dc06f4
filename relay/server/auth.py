"""Who may publish and who may watch what.

- Publishers present an API key (``Authorization: Bearer <key>``), compared in
  constant time against the configured keys. No keys configured: open.
- Subscribers present a token: a JWT signed with HS256 and the gateway's
  secret, whose claims grant whole workflow types (``workflow_types``, ``*``
  for all) and/or single sessions (``sessions``, in any type). No secret
  configured: everyone may watch everything. A token whose ``owner_sessions``
  claim is true also grants every session owned by its ``sub`` (the
  ``owner`` its events name), in any type, however new.
- Cancelling is a right of its own: a publisher key, or a token whose
  ``cancel`` claim is true, for the sessions that token may watch. Watching
  alone never allows it.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import jwt

from relay.protocol.frames import ANY_TYPE

ALGORITHM = "HS256"


class AuthError(Exception):
    """A credential that is missing, malformed, forged or expired."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


@dataclass(frozen=True, slots=True)
class Grant:
    """What one subscriber may watch, and until when."""

    subject: str
    workflow_types: frozenset[str]
    sessions: frozenset[str]
    expires_at: float | None
    # Whether the holder may also cancel what it may watch.
    cancel: bool = False
    # Whether every session owned by ``subject`` is granted too (the owner_sessions claim).
    owned: bool = False

    def allows(self, workflow_type: str, session_id: str | None, owner: str | None = None) -> bool:
        """Whether a subscription to ``workflow_type`` (or ``*``), maybe narrowed, is granted.

        ``owner`` is the session's owner, when one session of a known owner is meant.
        """
        return self.covers(workflow_type, session_id) or self.owns(owner)

    def owns(self, owner: str | None) -> bool:
        """Whether sessions of ``owner`` are granted as the holder's own."""
        return self.owned and owner is not None and owner == self.subject

    def scope(self, workflow_type: str, session_id: str | None) -> str | None:
        """The owner a subscription is narrowed to: None when the claims cover all of it.

        Raises AuthError when the grant allows none of it.
        """
        if self.covers(workflow_type, session_id):
            return None
        if self.owned:
            return self.subject
        raise AuthError("the token does not grant this subscription")

    def covers(self, workflow_type: str, session_id: str | None) -> bool:
        """Whether the type and session claims grant the subscription, whoever owns its sessions."""
        if ANY_TYPE in self.workflow_types:
            return True
        if workflow_type != ANY_TYPE and workflow_type in self.workflow_types:
            return True
        return session_id is not None and session_id in self.sessions

    def allows_cancel(self, workflow_type: str, session_id: str, owner: str | None = None) -> bool:
        """Whether one session (of a known type and owner) may be cancelled."""
        return self.cancel and self.allows(workflow_type, session_id, owner)


# Development mode: no credentials configured, everyone may watch and cancel.
OPEN = Grant(
    subject="",
    workflow_types=frozenset({ANY_TYPE}),
    sessions=frozenset(),
    expires_at=None,
    cancel=True,
)
# Watching is open, cancelling is not: publisher keys are configured, tokens are not.
WATCH_ALL = replace(OPEN, cancel=False)


def key_matches(presented: str, keys: Iterable[str]) -> bool:
    """Constant-time comparison against every configured key."""
    found = False
    for key in keys:
        found |= hmac.compare_digest(presented.encode(), key.encode())
    return found


def bearer(authorization: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer ...`` header, if any."""
    if not authorization:
        return None
    scheme, _, credential = authorization.partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        return None
    return credential.strip()


def _strings(value: object, claim: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise AuthError(f"claim {claim!r} must be a list of strings")
    return frozenset(value)


def looks_like_token(credential: str) -> bool:
    """Whether a credential has the shape of a JWT (three dot-separated parts)."""
    return credential.count(".") == 2


OWNER_SESSIONS_CLAIM = "owner_sessions"


def _flag_claim(claims: dict[str, object], claim: str) -> bool:
    value = claims.get(claim)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise AuthError(f"claim {claim!r} must be true or false")
    return value


def _check_lifetime(claims: dict[str, object], expires_at: float, max_lifetime: float) -> None:
    """Refuse a token meant to live longer than ``max_lifetime`` seconds (0: no limit)."""
    if max_lifetime <= 0:
        return
    now = time.time()
    issued = claims.get("iat")
    # A missing, malformed or future iat cannot shorten the lifetime.
    start = min(float(issued), now) if isinstance(issued, int | float) else now
    if expires_at - start > max_lifetime:
        raise AuthError(f"token lifetime exceeds the gateway's limit of {max_lifetime:g}s")


def read_token(token: str, secret: str, *, max_lifetime: float = 0) -> Grant:
    """Verify a subscriber token and return what it grants; raises AuthError.

    With ``max_lifetime`` (seconds), a token whose ``exp`` lies further than
    that from its ``iat`` (or from now, without one) is refused too.
    """
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]}
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired", expired=True) from None
    except jwt.PyJWTError as exc:
        raise AuthError(f"invalid token: {exc}") from None
    grant = Grant(
        subject=str(claims["sub"]),
        workflow_types=_strings(claims.get("workflow_types"), "workflow_types"),
        sessions=_strings(claims.get("sessions"), "sessions"),
        expires_at=float(claims["exp"]),
        cancel=_flag_claim(claims, "cancel"),
        owned=_flag_claim(claims, OWNER_SESSIONS_CLAIM),
    )
    if not grant.workflow_types and not grant.sessions and not grant.owned:
        raise AuthError(f"token grants neither workflow_types, sessions nor {OWNER_SESSIONS_CLAIM}")
    _check_lifetime(claims, float(claims["exp"]), max_lifetime)
    return grant


def mint_token(
    secret: str,
    subject: str,
    *,
    workflow_types: Sequence[str] = (),
    sessions: Sequence[str] = (),
    ttl_seconds: float = 3600,
    cancel: bool = False,
    owner_sessions: bool = False,
) -> str:
    """A signed subscriber token, as an application backend would mint one per user.

    With ``cancel`` the token may also cancel the sessions it may watch; with
    ``owner_sessions`` it may watch every session owned by ``subject``.
    """
    now = int(time.time())
    claims: dict[str, object] = {"sub": subject, "iat": now, "exp": now + int(ttl_seconds)}
    if workflow_types:
        claims["workflow_types"] = list(workflow_types)
    if sessions:
        claims["sessions"] = list(sessions)
    if cancel:
        claims["cancel"] = True
    if owner_sessions:
        claims[OWNER_SESSIONS_CLAIM] = True
    return jwt.encode(claims, secret, algorithm=ALGORITHM)

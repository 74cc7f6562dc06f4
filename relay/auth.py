"""Who may publish and who may watch what.

- Publishers present an API key (``Authorization: Bearer <key>``), compared in
  constant time against the configured keys. No keys configured: open.
- Subscribers present a token: a JWT signed with HS256 and the gateway's
  secret, whose claims grant whole workflow types (``workflow_types``, ``*``
  for all) and/or single sessions (``sessions``, in any type). No secret
  configured: everyone may watch everything.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import jwt

ALGORITHM = "HS256"
ANY = "*"


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

    def allows(self, workflow_type: str, session_id: str | None) -> bool:
        """Whether a subscription to ``workflow_type`` (or ``*``), maybe narrowed, is granted."""
        if ANY in self.workflow_types:
            return True
        if workflow_type != ANY and workflow_type in self.workflow_types:
            return True
        return session_id is not None and session_id in self.sessions

    def allows_session(self, workflow_type: str, session_id: str) -> bool:
        """Whether one session (of a known type) may be read."""
        return self.allows(workflow_type, session_id)


OPEN = Grant(subject="", workflow_types=frozenset({ANY}), sessions=frozenset(), expires_at=None)


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


def read_token(token: str, secret: str) -> Grant:
    """Verify a subscriber token and return what it grants; raises AuthError."""
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
    )
    if not grant.workflow_types and not grant.sessions:
        raise AuthError("token grants neither workflow_types nor sessions")
    return grant


def mint_token(
    secret: str,
    subject: str,
    *,
    workflow_types: Sequence[str] = (),
    sessions: Sequence[str] = (),
    ttl_seconds: float = 3600,
) -> str:
    """A signed subscriber token, as an application backend would mint one per user."""
    now = int(time.time())
    claims: dict[str, object] = {"sub": subject, "iat": now, "exp": now + int(ttl_seconds)}
    if workflow_types:
        claims["workflow_types"] = list(workflow_types)
    if sessions:
        claims["sessions"] = list(sessions)
    return jwt.encode(claims, secret, algorithm=ALGORITHM)

"""Which Redis failures are worth retrying, decided in one place for the gateway and reporters.

A transient failure says nothing about the request: Redis is out of reach,
out of memory, loading its data, read-only (a replica, or a failover under
way), busy running a script, or its cluster is reconfiguring. The same
request may well succeed later, so the gateway answers 503 with Retry-After
and reporters keep the event to send again. Anything else (a wrong password,
a missing permission, a key of the wrong type) fails the same way every time.
"""

from __future__ import annotations

from redis import exceptions

# Error replies redis-py has no class of its own for, by their leading code.
TRANSIENT_CODES = frozenset({"BUSY", "NOREPLICAS"})

_TRANSIENT_REPLIES = (
    exceptions.OutOfMemoryError,
    exceptions.ReadOnlyError,
    exceptions.ClusterDownError,  # MASTERDOWN too
    exceptions.TryAgainError,
)
_BAD_CREDENTIALS = (exceptions.AuthenticationError, exceptions.AuthorizationError)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc``, raised by a Redis call, may well not happen on a later try."""
    if isinstance(exc, _BAD_CREDENTIALS):
        return False
    if isinstance(exc, exceptions.ConnectionError | exceptions.TimeoutError | OSError):
        return True  # unreachable, timed out, or LOADING (a ConnectionError in redis-py)
    if isinstance(exc, _TRANSIENT_REPLIES):
        return True
    if isinstance(exc, exceptions.ResponseError):
        code = str(exc).split(" ", 1)[0]
        return code in TRANSIENT_CODES
    return False

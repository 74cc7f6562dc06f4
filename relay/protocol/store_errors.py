"""Which Redis failures are worth retrying, decided in one place for the gateway and reporters.

A transient failure says nothing about the request: Redis is out of reach,
out of memory, loading its data, read-only (a replica, or a failover under
way), busy running a script, short of the replicas a write must reach, or
its cluster is reconfiguring. The same
request may well succeed later, so the gateway answers 503 with Retry-After
and reporters keep the event to send again. Anything else (a wrong password,
a missing permission, a key of the wrong type) fails the same way every time.
"""

from __future__ import annotations

from redis import exceptions

# How long a write waits for its replicas by default, when it waits for any.
DEFAULT_REPLICA_TIMEOUT_MS = 1_000
# Error replies redis-py has no class of its own for, by their leading code.
TRANSIENT_CODES = frozenset({"BUSY", "NOREPLICAS"})


class TooFewReplicas(exceptions.RedisError):
    """Redis took a write, but fewer replicas than asked for acknowledged it in time.

    Transient: the write is there, and a retry under the same idempotency key
    writes nothing again but waits for the replicas anew.
    """

    def __init__(self, acknowledged: int, wanted: int, timeout_ms: int) -> None:
        super().__init__(
            f"only {acknowledged} of {wanted} replica(s) acknowledged the write "
            f"within {timeout_ms} ms"
        )


def check_replicas(acknowledged: int, wanted: int, timeout_ms: int) -> None:
    """Raise :class:`TooFewReplicas` unless WAIT answered at least ``wanted`` replicas."""
    if acknowledged < wanted:
        raise TooFewReplicas(acknowledged, wanted, timeout_ms)


_TRANSIENT_REPLIES = (
    TooFewReplicas,
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

"""The commands one publication takes, on a single Redis or a cluster, free of any I/O.

A :class:`~relay.protocol.entries.PublishPlan` makes one script call per
workflow type. :func:`publish_rounds` is a generator that says what to send
(:class:`Commands` in one pipeline, or :class:`LoadScript`) and takes what
came back, so the blocking reporter and the asyncio publisher drive the very
same logic with their own clients:

- every call of a round goes in one pipeline: on a single Redis one round
  trip, with ``WAIT`` after the calls when replicas must acknowledge them; a
  cluster pipeline groups the calls by node and sends each group at once;
- a call that failed is sent again in the next round, and only it: after
  ``NOSCRIPT`` (a node that lost its script cache, a promoted replica) once
  the script is loaded, after a transient failure at once; calls answered
  keep their answer. A failure that remains is raised as it came, so callers
  handle the same exceptions as for any Redis command;
- the type registry (``SADD``) rides in the first round for types this
  publisher has not registered yet, and a type it added is announced by one
  ``XADD`` afterwards. Both are single-key commands beside the calls, never
  inside them; readers also find streams by ``SCAN``, so one that fails only
  delays discovery and is logged, not raised.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from typing import Any

from redis import exceptions

from relay.protocol.entries import ANNOUNCEMENTS_MAXLEN, PublishPlan
from relay.protocol.keys import Keys
from relay.protocol.store_errors import check_replicas, is_transient

logger = logging.getLogger(__name__)

# Rounds of one publication at most: a first try, a reload of the script, one retry more.
PUBLISH_ROUNDS = 3
# A cluster client follows redirections itself; one still answered here is worth a round.
_REDIRECTIONS = (exceptions.MovedError, exceptions.AskError)
# Types one publisher remembers having registered; past that it starts over.
REGISTERED_TYPES_LIMIT = 10_000

Command = tuple[int | str | bytes, ...]


@dataclass(frozen=True, slots=True)
class Commands:
    """Send these commands in one non-transactional pipeline; answer every result or error."""

    commands: list[Command]


@dataclass(frozen=True, slots=True)
class LoadScript:
    """Load the publish script (on every primary of a cluster); answer None."""


Step = Commands | LoadScript
PublishRounds = Generator[Step, list[Any] | None, None]


class TypeRegistry:
    """The workflow types a publisher registered already, so it does not ``SADD`` them again."""

    def __init__(self, limit: int = REGISTERED_TYPES_LIMIT) -> None:
        self._types: set[str] = set()
        self._limit = limit

    def unregistered(self, types: Iterable[str]) -> list[str]:
        """The ones of ``types`` not registered by this publisher yet."""
        return sorted(set(types) - self._types)

    def add(self, types: Iterable[str]) -> None:
        """Remember ``types`` as registered."""
        if len(self._types) >= self._limit:
            self._types.clear()
        self._types.update(types)


def refuse_cluster_replicas(min_replicas: int, cluster: bool) -> None:
    """Raise ValueError when replicas must acknowledge writes made through a cluster client.

    ``WAIT`` counts the writes of its own connection, and a cluster client may
    send a call again elsewhere after a redirection, where no ``WAIT`` would
    cover it: relay does not promise what it cannot check.
    """
    if min_replicas and cluster:
        raise ValueError(
            "min_replicas is not supported on a Redis Cluster: WAIT cannot be tied "
            "to every write of a publication there; set min_replicas to 0"
        )


def publish_rounds(
    plan: PublishPlan,
    keys: Keys,
    registry: TypeRegistry | None,
    *,
    min_replicas: int = 0,
    replica_timeout_ms: int = 0,
) -> PublishRounds:
    """The steps that answer every call of ``plan``; raises what keeps failing.

    ``registry`` is None for lookups, which register nothing. Once the
    generator is exhausted, read the answers from ``plan``.
    """
    new_types = [] if registry is None else registry.unregistered(plan.types)
    failure: BaseException | None = None
    for _ in range(PUBLISH_ROUNDS):
        pending = plan.pending()
        commands = [call.command() for call in pending]
        if new_types:
            commands.append(("SADD", keys.types, *new_types))
        if min_replicas:
            commands.append(("WAIT", min_replicas, replica_timeout_ms))
        results = yield Commands(commands)
        assert results is not None
        failure = None
        for call, result in zip(pending, results, strict=False):
            if isinstance(result, BaseException):
                failure = failure or result
            else:
                call.answer = result
        extra = results[len(pending) :]
        if new_types:
            yield from _registered(extra.pop(0), new_types, keys, registry)
            new_types = []
        if min_replicas:
            acknowledged = extra.pop(0)
            if isinstance(acknowledged, BaseException):
                raise acknowledged
            check_replicas(int(acknowledged), min_replicas, replica_timeout_ms)
        if failure is None:
            return
        if isinstance(failure, exceptions.NoScriptError):
            yield LoadScript()
        elif not (is_transient(failure) or isinstance(failure, _REDIRECTIONS)):
            raise failure
    assert failure is not None
    raise failure


def _registered(
    added: Any, types: list[str], keys: Keys, registry: TypeRegistry | None
) -> Generator[Step, list[Any] | None, None]:
    """Steps after the registry's ``SADD`` answered ``added``: announce types it added."""
    if isinstance(added, BaseException):
        logger.warning("could not register workflow types: %s", added)
        return
    assert registry is not None
    registry.add(types)
    if not int(added):
        return
    announce = ("XADD", keys.announcements, "MAXLEN", "~", ANNOUNCEMENTS_MAXLEN, "*")
    results = yield Commands([(*announce, "types", ",".join(types))])
    if results and isinstance(results[0], BaseException):
        logger.warning("could not announce workflow types: %s", results[0])

"""Connections to the store: a single Redis, a Redis Cluster, or the embedded in-process one."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ConnectionError, TimeoutError

from relay.client.redis_urls import (
    AsyncStore,
    Kind,
    async_detect_kind,
    async_redis_store,
    check_mode,
    redacted,
)
from relay.server.settings import Settings

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 2.0
COMMAND_TIMEOUT = 5.0
# Workers write whatever bytes they like. Decoding strictly would make one
# non-UTF-8 byte raise inside the client and lose the whole reply; escaping
# keeps every byte (and lets a key be sent back as it was), and the entry
# decoder refuses any string that holds an escaped byte.
ENCODING_ERRORS = "surrogateescape"


@dataclass(frozen=True, slots=True)
class Connections:
    """One client for commands and one kept for the reader's blocking XREAD.

    On a cluster both are cluster clients; the reader's has the longer
    socket timeout its blocking reads need, on every node.
    """

    commands: AsyncStore
    reader: AsyncStore

    async def aclose(self) -> None:
        """Close both clients and their pools."""
        await self.reader.aclose()
        await self.commands.aclose()


async def connect(settings: Settings) -> Connections:
    """Clients for ``settings.redis_url``, or an in-process store when it is unset.

    In ``auto`` mode a plain URL's server is asked whether it is a cluster
    node; one that cannot be reached yet is taken for a single Redis, and
    the log says so (a cluster can be named by ``redis+cluster://`` or
    ``RELAY_REDIS_MODE=cluster`` instead). Through Sentinel, both clients ask
    the sentinels for the primary whenever they connect: after a failover the
    next command, or the reader's next XREAD, reaches the promoted replica.
    """
    if not settings.redis_url:
        return _embedded()
    url = settings.redis_url
    try:
        kind = await async_detect_kind(url, settings.redis_mode, **_command_options(settings))
    except (ConnectionError, TimeoutError, OSError) as exc:
        # Not a warning of its own: the reader warns once that the store is unreachable.
        logger.info(
            "could not ask the Redis at %s whether it is a cluster (%s); taking it for a "
            "single Redis: set RELAY_REDIS_MODE or use a redis+cluster:// URL to say which",
            redacted(url),
            exc,
        )
        kind = "single"
    return open_connections(settings, kind)


def open_connections(settings: Settings, kind: Kind | None = None) -> Connections:
    """Clients of ``kind`` for ``settings.redis_url`` (or the in-process store), asking nothing.

    Without ``kind``, what the URL and ``redis_mode`` say: a plain URL in
    ``auto`` mode is taken for a single Redis; :func:`connect` asks its server.
    """
    if not settings.redis_url:
        return _embedded()
    url = settings.redis_url
    kind = kind or check_mode(url, settings.redis_mode) or "single"
    logger.info("store: %s Redis at %s", kind, redacted(url))
    commands = async_redis_store(url, kind, **_command_options(settings))
    # The reader blocks in XREAD for up to read_block_ms; its timeout must be
    # longer. On a single Redis one connection, taken from its own pool for
    # every XREAD: the pool reconnects it through the sentinels after a
    # failover, which redis-py's single-connection client does not. On a
    # cluster the reader only asks this client for the slot map and opens a
    # connection per slot group of its own (see relay.server.read_groups).
    one_connection = {"max_connections": 1} if kind == "single" else {}
    reader = async_redis_store(
        url,
        kind,
        **_common_options(),
        socket_timeout=settings.read_block_ms / 1000 + COMMAND_TIMEOUT,
        **one_connection,
    )
    return Connections(commands, reader)


def _common_options() -> dict[str, Any]:
    return {
        "decode_responses": True,
        "encoding_errors": ENCODING_ERRORS,
        "socket_connect_timeout": CONNECT_TIMEOUT,
    }


def _command_options(settings: Settings) -> dict[str, Any]:
    # A publish may wait for its replicas on top of running.
    wait = settings.replica_timeout_ms / 1000 if settings.min_replicas else 0
    return {
        **_common_options(),
        "socket_timeout": COMMAND_TIMEOUT + wait,
        "health_check_interval": 30,
    }


def _embedded() -> Connections:
    import fakeredis

    server = fakeredis.FakeServer()
    commands = fakeredis.FakeAsyncRedis(
        server=server, decode_responses=True, encoding_errors=ENCODING_ERRORS
    )
    reader = fakeredis.FakeAsyncRedis(
        server=server, decode_responses=True, encoding_errors=ENCODING_ERRORS
    )
    return Connections(commands, reader)

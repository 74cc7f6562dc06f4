"""Connections to the store: a real Redis, or the embedded in-process one."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis.asyncio import Redis

from relay.client.redis_urls import async_redis_client
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
    """One client for commands and one kept for the reader's blocking XREAD."""

    commands: Redis
    reader: Redis

    async def aclose(self) -> None:
        """Close both clients and their pools."""
        await self.reader.aclose()
        await self.commands.aclose()


def connect(settings: Settings) -> Connections:
    """Clients for ``settings.redis_url``, or an in-process store when it is unset.

    Through Sentinel, both ask the sentinels for the primary whenever they
    connect: after a failover the next command, or the reader's next XREAD,
    reaches the promoted replica.
    """
    if not settings.redis_url:
        return _embedded()
    # A publish may wait for its replicas on top of running.
    wait = settings.replica_timeout_ms / 1000 if settings.min_replicas else 0
    commands = async_redis_client(
        settings.redis_url,
        decode_responses=True,
        encoding_errors=ENCODING_ERRORS,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=COMMAND_TIMEOUT + wait,
        health_check_interval=30,
    )
    # The reader blocks in XREAD for up to read_block_ms; its timeout must be
    # longer. One connection, taken from its own pool for every XREAD: the pool
    # reconnects it through the sentinels after a failover, which redis-py's
    # single-connection client does not.
    reader = async_redis_client(
        settings.redis_url,
        decode_responses=True,
        encoding_errors=ENCODING_ERRORS,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=settings.read_block_ms / 1000 + COMMAND_TIMEOUT,
        max_connections=1,
    )
    return Connections(commands, reader)


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

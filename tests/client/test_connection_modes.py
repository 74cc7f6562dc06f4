"""Which client a URL opens: a single Redis, a cluster (named or found out), or through Sentinel."""

from __future__ import annotations

import logging
import socket

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.exceptions import ConnectionError

from relay.client.redis_urls import (
    AsyncStore,
    SyncStore,
    async_detect_kind,
    is_cluster,
    open_async_redis,
    open_redis,
)
from relay.client.reporters import AsyncReporter, Reporter
from relay.client.retry import ReportError, RetryPolicy
from relay.server.connections import COMMAND_TIMEOUT, connect, open_connections
from relay.server.settings import Settings
from tests.cluster import Cluster
from tests.conftest import RedisServer
from tests.sentinel import Sentinels

PASSWORD = "hunter2"
# Enough keys to land on every primary of a three-primary cluster.
KEYS = [f"key-{n}" for n in range(30)]


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _writes_everywhere(client: SyncStore) -> None:
    for key in KEYS:
        client.set(key, key)
    assert [client.get(key) for key in KEYS] == KEYS


async def _writes_everywhere_async(client: AsyncStore) -> None:
    for key in KEYS:
        await client.set(key, key)
    assert [await client.get(key) for key in KEYS] == KEYS


async def test_a_plain_url_of_a_cluster_node_opens_a_cluster_client(
    redis_cluster: Cluster,
) -> None:
    client = await open_async_redis(redis_cluster.seed_url, decode_responses=True)
    try:
        assert isinstance(client, redis.asyncio.cluster.RedisCluster)
        await _writes_everywhere_async(client)
    finally:
        await client.aclose()
    blocking = open_redis(redis_cluster.seed_url, decode_responses=True)
    try:
        assert isinstance(blocking, redis.cluster.RedisCluster)
        assert blocking.get(KEYS[-1]) == KEYS[-1]
    finally:
        blocking.close()


async def test_a_cluster_url_opens_a_cluster_client(redis_cluster: Cluster) -> None:
    client = await open_async_redis(redis_cluster.url, decode_responses=True)
    try:
        assert is_cluster(client)
        await _writes_everywhere_async(client)
    finally:
        await client.aclose()
    # The blocking cluster client has no health checks: the option is left out, not passed on.
    blocking = open_redis(redis_cluster.url, decode_responses=True, health_check_interval=30)
    try:
        assert isinstance(blocking, redis.cluster.RedisCluster)
        assert "health_check_interval" not in blocking.nodes_manager.connection_kwargs
        _writes_everywhere(blocking)
    finally:
        blocking.close()


async def test_single_mode_on_a_cluster_node_asks_nothing_and_opens_a_plain_client(
    redis_cluster: Cluster,
) -> None:
    client = await open_async_redis(redis_cluster.seed_url, mode="single")
    assert type(client) is redis.asyncio.Redis
    assert not is_cluster(client)
    await client.aclose()


async def test_cluster_mode_on_a_plain_url_opens_a_cluster_client(redis_cluster: Cluster) -> None:
    client = open_redis(redis_cluster.seed_url, mode="cluster", decode_responses=True)
    try:
        assert isinstance(client, redis.cluster.RedisCluster)
        _writes_everywhere(client)
    finally:
        client.close()


def test_a_cluster_refuses_a_database_other_than_zero(redis_cluster: Cluster) -> None:
    with pytest.raises(ValueError, match="database 0 only"):
        open_redis(redis_cluster.seed_url.replace("/0", "/3"))


async def test_a_single_redis_opens_a_plain_client(redis_server: RedisServer) -> None:
    client = await open_async_redis(redis_server.url, decode_responses=True)
    try:
        assert type(client) is redis.asyncio.Redis
        await _writes_everywhere_async(client)
    finally:
        await client.aclose()


def test_asking_leaves_no_connection_open(redis_server: RedisServer) -> None:
    client = open_redis(redis_server.url, client_name="relay-mode-probe")
    with redis_server.client() as admin:
        named = [c for c in admin.client_list() if c["name"] == "relay-mode-probe"]
    assert named == []
    assert type(client) is redis.Redis
    client.close()


def test_a_server_that_refuses_info_is_taken_for_a_single_redis(
    redis_server: RedisServer,
) -> None:
    with redis_server.client() as admin:
        admin.acl_setuser(
            "no-info",
            enabled=True,
            passwords=[f"+{PASSWORD}"],
            keys=["*"],
            commands=["+@all", "-info"],
        )
        try:
            client = open_redis(f"redis://no-info:{PASSWORD}@127.0.0.1:{redis_server.port}/0")
            try:
                assert type(client) is redis.Redis
                assert client.ping()
            finally:
                client.close()
        finally:
            admin.acl_deluser("no-info")


async def test_a_server_that_cannot_be_reached_is_an_error_to_the_caller() -> None:
    with pytest.raises(ConnectionError):
        await async_detect_kind(
            f"redis://:{PASSWORD}@127.0.0.1:{_unused_port()}/0", socket_connect_timeout=1
        )


async def test_a_sentinel_url_opens_a_client_of_the_primary(sentinels: Sentinels) -> None:
    client = await open_async_redis(sentinels.url(), decode_responses=True)
    try:
        assert isinstance(client, redis.asyncio.Redis)
        assert not is_cluster(client)
        await _writes_everywhere_async(client)
    finally:
        await client.aclose()


async def test_the_gateway_finds_out_it_faces_a_cluster(
    redis_cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay.server.connections")
    settings = Settings(redis_url=redis_cluster.seed_url, read_block_ms=700)
    connections = await connect(settings)
    try:
        assert is_cluster(connections.commands)
        assert isinstance(connections.reader, redis.asyncio.cluster.RedisCluster)
        # The reader's blocking reads need a longer timeout than commands, on every node.
        timeout = connections.reader.get_connection_kwargs()["socket_timeout"]
        assert timeout == pytest.approx(0.7 + COMMAND_TIMEOUT)
        await _writes_everywhere_async(connections.commands)
    finally:
        await connections.aclose()
    assert "store: cluster Redis at redis://127.0.0.1:" in caplog.text


def test_the_gateway_says_which_store_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="relay.server.connections")
    url = f"redis+cluster://:{PASSWORD}@127.0.0.1:{_unused_port()}/0"
    connections = open_connections(Settings(redis_url=url))
    assert is_cluster(connections.commands)
    assert is_cluster(connections.reader)
    assert PASSWORD not in caplog.text
    assert "store: cluster Redis at redis+cluster://:[redacted]@127.0.0.1:" in caplog.text


async def test_a_gateway_that_cannot_ask_yet_takes_a_single_redis_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="relay.server.connections")
    url = f"redis://:{PASSWORD}@127.0.0.1:{_unused_port()}/0"
    connections = await connect(Settings(redis_url=url))
    try:
        assert type(connections.commands) is redis.asyncio.Redis
    finally:
        await connections.aclose()
    assert "could not ask the Redis at redis://:[redacted]@" in caplog.text
    assert PASSWORD not in caplog.text


async def test_the_embedded_store_needs_no_url() -> None:
    connections = await connect(Settings())
    try:
        await connections.commands.set("k", "v")
        assert await connections.reader.get("k") == "v"
        assert not is_cluster(connections.commands)
    finally:
        await connections.aclose()


def test_a_reporter_opens_its_client_when_it_first_reports() -> None:
    # Asking a server that is not there yet is retried as the report is.
    reporter = Reporter(
        f"redis://127.0.0.1:{_unused_port()}/0", retry=RetryPolicy(retry_for=0.2, buffer_size=1)
    )
    with reporter, pytest.raises(ReportError, match="Redis unreachable"):
        reporter.report("s1", "map", "start", 0)


async def test_an_async_reporter_opens_its_client_when_it_first_reports(
    redis_server: RedisServer,
) -> None:
    reporter = AsyncReporter(redis_server.url, redis_mode="single")
    async with reporter:
        stream_id = await reporter.report("s1", "map", "start", 0)
    with redis_server.client() as client:
        assert [entry_id for entry_id, _ in client.xrange("workflow:progress:map")][-1] == stream_id

"""Redis URLs, plain, ``redis+cluster://`` and ``redis+sentinel://``: what they say, and how a bad
one is told."""

from __future__ import annotations

import pytest
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.connection
import redis.asyncio.sentinel
import redis.sentinel
from pydantic import ValidationError

from relay.cli.main import configuration_problems
from relay.client.redis_urls import (
    DEFAULT_PORT,
    DEFAULT_SENTINEL_PORT,
    ClusterUrl,
    Mode,
    SentinelUrl,
    async_redis_client,
    async_redis_store,
    check_mode,
    check_redis_url,
    parse_cluster_url,
    parse_sentinel_url,
    redacted,
    redis_client,
    redis_store,
)
from relay.server.settings import Settings

PASSWORD = "hunter2"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis+sentinel://127.0.0.1:26379/relay",
            SentinelUrl((("127.0.0.1", 26379),), "relay"),
        ),
        (
            "REDIS+SENTINEL://a:1,b:2,c/relay/3",
            SentinelUrl((("a", 1), ("b", 2), ("c", DEFAULT_SENTINEL_PORT)), "relay", db=3),
        ),
        (
            f"redis+sentinel://:{PASSWORD}@[::1]:26380,[fe80::1]/my%20service/",
            SentinelUrl(
                (("::1", 26380), ("fe80::1", DEFAULT_SENTINEL_PORT)),
                "my service",
                password=PASSWORD,
            ),
        ),
        (
            "redis+sentinel://app:p%40ss@h/relay?sentinel_username=s&sentinel_password=sp",
            SentinelUrl(
                (("h", DEFAULT_SENTINEL_PORT),),
                "relay",
                username="app",
                password="p@ss",
                sentinel_username="s",
                sentinel_password="sp",
            ),
        ),
    ],
)
def test_sentinel_urls_parse(url: str, expected: SentinelUrl) -> None:
    assert parse_sentinel_url(url) == expected
    check_redis_url(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"redis+sentinel://:{PASSWORD}@h:1", "names its service after the hosts"),
        (f"redis+sentinel://:{PASSWORD}@h:1/", "names its service after the hosts"),
        (f"redis+sentinel://:{PASSWORD}@/relay", "sentinel address 1 has no host"),
        (f"redis+sentinel://:{PASSWORD}@a:1,/relay", "sentinel address 2 has no host"),
        (f"redis+sentinel://:{PASSWORD}@a:1,b:port/relay", "sentinel address 2 has a port"),
        (f"redis+sentinel://:{PASSWORD}@a:0/relay", "sentinel address 1 has a port"),
        (f"redis+sentinel://:{PASSWORD}@a:65536/relay", "has a port that is not a number"),
        (f"redis+sentinel://:{PASSWORD}@::1:26379/relay", "must be in brackets"),
        (f"redis+sentinel://:{PASSWORD}@[::1/relay", "must be in brackets"),
        (f"redis+sentinel://:{PASSWORD}@[::1]x/relay", "must be in brackets"),
        (f"redis+sentinel://:{PASSWORD}@h/relay/zero", "database after the service name"),
        (f"redis+sentinel://:{PASSWORD}@h/relay?ssl=true", "unknown Sentinel URL option 'ssl'"),
        (f"redis+sentinel://:{PASSWORD}@h/relay#x", "no #fragment"),
        (f"sentinel://:{PASSWORD}@h/relay", "not a Redis URL"),
        (f"redis://:{PASSWORD}@h:port/0", "Port could not be cast"),
    ],
)
def test_a_bad_url_says_what_is_wrong_without_quoting_it(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        check_redis_url(url)
    assert PASSWORD not in str(caught.value)


def test_the_gateway_refuses_a_bad_sentinel_url_in_one_line_without_the_password() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(redis_url=f"redis+sentinel://:{PASSWORD}@h:1")
    problems = configuration_problems(caught.value)
    assert problems == [
        "--redis-url / RELAY_REDIS_URL: a Sentinel URL names its service after the hosts: "
        ".../service[/db]"
    ]


def test_the_gateway_takes_a_sentinel_url() -> None:
    url = "redis+sentinel://a:26379,b:26379/relay/0"
    assert Settings(redis_url=url).redis_url == url


def test_min_replicas_needs_a_redis() -> None:
    with pytest.raises(ValidationError, match="min_replicas needs a redis_url"):
        Settings(min_replicas=1)
    assert Settings(redis_url="redis://h", min_replicas=1).min_replicas == 1


def test_redacted_hides_every_password() -> None:
    url = f"redis+sentinel://app:{PASSWORD}@a:1,b:2/relay/0?sentinel_password={PASSWORD}"
    shown = redacted(url)
    assert PASSWORD not in shown
    assert shown == ("redis+sentinel://app:[redacted]@a:1,b:2/relay/0?sentinel_password=[redacted]")
    assert redacted("redis://h:6379/0") == "redis://h:6379/0"
    assert redacted(f"redis://:{PASSWORD}@h") == "redis://:[redacted]@h"


def test_the_repr_of_a_parsed_url_leaves_passwords_out() -> None:
    parsed = parse_sentinel_url(f"redis+sentinel://:{PASSWORD}@h/r?sentinel_password={PASSWORD}")
    assert PASSWORD not in repr(parsed)


async def test_a_sentinel_client_asks_the_sentinels_with_their_own_credentials() -> None:
    url = f"redis+sentinel://app:{PASSWORD}@a:1,b:2/relay/4?sentinel_password=sp"
    client = async_redis_client(url, decode_responses=True)
    pool = client.connection_pool
    assert isinstance(pool, redis.asyncio.sentinel.SentinelConnectionPool)
    assert pool.service_name == "relay"
    assert pool.connection_kwargs["db"] == 4
    assert pool.connection_kwargs["username"] == "app"
    assert pool.connection_kwargs["password"] == PASSWORD
    assert pool.connection_kwargs["decode_responses"] is True
    sentinels = pool.sentinel_manager.sentinels
    addresses = [
        (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
        for s in sentinels
    ]
    assert addresses == [("a", 1), ("b", 2)]
    assert all(s.connection_pool.connection_kwargs["password"] == "sp" for s in sentinels)
    await client.aclose()


def test_a_blocking_sentinel_client_is_made_alike() -> None:
    client = redis_client("redis+sentinel://a:1/relay", socket_timeout=3)
    pool = client.connection_pool
    assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
    assert pool.connection_kwargs["socket_timeout"] == 3
    client.close()


def test_a_plain_url_makes_a_plain_client() -> None:
    client = async_redis_client("redis://127.0.0.1:1/2")
    assert type(client) is redis.asyncio.Redis
    assert client.connection_pool.connection_kwargs["db"] == 2


async def test_a_single_connection_client_through_sentinel_is_refused() -> None:
    # It would reconnect to the address it had, never to a promoted replica.
    with pytest.raises(ValueError, match="max_connections=1"):
        async_redis_client("redis+sentinel://a:1/relay", single_connection_client=True)
    client = async_redis_client("redis+sentinel://a:1/relay", single_connection_client=False)
    assert not client.single_connection_client
    await client.aclose()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis+cluster://127.0.0.1:7000", ClusterUrl((("127.0.0.1", 7000),))),
        (
            "REDIS+CLUSTER://a:1,b:2,c/0",
            ClusterUrl((("a", 1), ("b", 2), ("c", DEFAULT_PORT))),
        ),
        (
            f"rediss+cluster://app:{PASSWORD}@[::1]:7000,[fe80::1]/",
            ClusterUrl(
                (("::1", 7000), ("fe80::1", DEFAULT_PORT)),
                username="app",
                password=PASSWORD,
                tls=True,
            ),
        ),
        ("redis+cluster://:p%40ss@h", ClusterUrl((("h", DEFAULT_PORT),), password="p@ss")),
    ],
)
def test_cluster_urls_parse(url: str, expected: ClusterUrl) -> None:
    assert parse_cluster_url(url) == expected
    check_redis_url(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"redis+cluster://:{PASSWORD}@h:1/3", "database 0 only"),
        (f"redis+cluster://:{PASSWORD}@h:1/db", "database 0 only"),
        (f"redis+cluster://:{PASSWORD}@/0", "cluster address 1 has no host"),
        (f"redis+cluster://:{PASSWORD}@a:1,/0", "cluster address 2 has no host"),
        (f"redis+cluster://:{PASSWORD}@a:1,b:port", "cluster address 2 has a port"),
        (f"redis+cluster://:{PASSWORD}@a:0", "cluster address 1 has a port"),
        (f"redis+cluster://:{PASSWORD}@::1:7000", r"must be in brackets, as \[::1\]:6379"),
        (f"redis+cluster://:{PASSWORD}@[::1", "must be in brackets"),
        (f"redis+cluster://:{PASSWORD}@h?ssl=true", r"no \?options"),
        (f"redis+cluster://:{PASSWORD}@h#x", r"no \?options or #fragment"),
        (f"cluster://:{PASSWORD}@h", "not a Redis URL"),
    ],
)
def test_a_bad_cluster_url_says_what_is_wrong_without_quoting_it(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        check_redis_url(url)
    assert PASSWORD not in str(caught.value)


def test_the_repr_of_a_parsed_cluster_url_leaves_the_password_out() -> None:
    assert PASSWORD not in repr(parse_cluster_url(f"redis+cluster://:{PASSWORD}@h"))


@pytest.mark.parametrize(
    ("url", "mode", "kind"),
    [
        ("redis+cluster://h", "auto", "cluster"),
        ("redis+cluster://h", "cluster", "cluster"),
        ("redis+sentinel://h/relay", "auto", "single"),
        ("redis+sentinel://h/relay", "single", "single"),
        ("unix:///tmp/redis.sock", "auto", "single"),
        ("redis://h/0", "single", "single"),
        ("rediss://h/0", "cluster", "cluster"),
        ("redis://h/0", "auto", None),
    ],
)
def test_the_mode_and_the_url_say_the_kind_or_leave_it_to_the_server(
    url: str, mode: Mode, kind: str | None
) -> None:
    assert check_mode(url, mode) == kind


@pytest.mark.parametrize(
    ("url", "mode", "message"),
    [
        ("redis+cluster://h", "single", "names a cluster"),
        ("redis+sentinel://h/relay", "cluster", "Sentinel URL names one primary"),
        ("unix:///tmp/redis.sock", "cluster", "not reached through a unix socket"),
        ("redis://h/0", "sharded", "unknown Redis mode 'sharded'"),
    ],
)
def test_a_mode_the_url_contradicts_is_refused(url: str, mode: Mode, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_mode(url, mode)


def test_the_gateway_refuses_cluster_mode_with_a_sentinel_url_in_one_line() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(redis_url=f"redis+sentinel://:{PASSWORD}@h/relay", redis_mode="cluster")
    (problem,) = configuration_problems(caught.value)
    assert "a Sentinel URL names one primary: it cannot be used as a cluster" in problem
    assert PASSWORD not in problem


def test_the_gateway_reads_its_redis_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().redis_mode == "auto"
    monkeypatch.setenv("RELAY_REDIS_MODE", "single")
    assert Settings(redis_url="redis://h").redis_mode == "single"
    monkeypatch.setenv("RELAY_REDIS_MODE", "sharded")
    with pytest.raises(ValidationError):
        Settings()


async def test_a_cluster_client_is_made_from_the_url_without_asking_anything() -> None:
    url = f"rediss+cluster://app:{PASSWORD}@a:7000,b:7001/0"
    client = async_redis_store(url, "cluster", decode_responses=True, max_connections=4)
    assert isinstance(client, redis.asyncio.cluster.RedisCluster)
    seeds = [(node.host, node.port) for node in client.nodes_manager.startup_nodes.values()]
    assert seeds == [("a", 7000), ("b", 7001)]
    kwargs = client.get_connection_kwargs()
    assert (kwargs["username"], kwargs["password"]) == ("app", PASSWORD)
    assert kwargs["connection_class"] is redis.asyncio.connection.SSLConnection
    await client.aclose()


def test_options_a_cluster_cannot_take_are_refused_before_connecting() -> None:
    url = "redis+cluster://a:7000"
    with pytest.raises(ValueError, match="database 0 only"):
        redis_store(url, "cluster", db=2)
    with pytest.raises(ValueError, match="max_connections=1"):
        async_redis_store(url, "cluster", single_connection_client=True)
    with pytest.raises(ValueError, match="database 0 only"):
        redis_store("redis://a:7000/?db=5", "cluster")

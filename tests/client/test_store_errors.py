"""Redis out of memory, and other failures: transient ones keep the event, permanent ones say so."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import pytest
from redis import exceptions

from relay.client.reporters import AsyncReporter, Reporter
from relay.client.retry import ReportError, RetryPolicy
from relay.protocol.store_errors import is_transient
from tests.conftest import RedisServer
from tests.helpers import Gateway, event

STREAM = "workflow:progress:map"
QUICK = RetryPolicy(retry_for=0.2)


@pytest.fixture
def full_redis(own_redis: RedisServer) -> Callable[[bool], None]:
    """The test's own Redis at a tiny memory limit without eviction; call to switch it."""

    def out_of_memory(full: bool) -> None:
        with own_redis.client() as client:
            client.config_set("maxmemory-policy", "noeviction")
            client.config_set("maxmemory", "1" if full else "0")

    out_of_memory(True)
    return out_of_memory


def steps(server: RedisServer) -> list[str]:
    with server.client() as client:
        return [fields["step"] for _, fields in client.xrange(STREAM)]


def test_reporter_keeps_the_event_while_redis_is_out_of_memory(
    own_redis: RedisServer, full_redis: Callable[[bool], None]
) -> None:
    with Reporter(own_redis.url, retry=QUICK) as reporter:
        with pytest.raises(ReportError, match="OutOfMemoryError") as raised:
            reporter.report("s1", "map", "during", 10)
        assert "1 event(s) kept" in str(raised.value)
        assert len(reporter.pending) == 1
        full_redis(False)
        reporter.report("s1", "map", "after", 20)
    assert steps(own_redis) == ["during", "after"]


async def test_async_reporter_keeps_the_event_while_redis_is_out_of_memory(
    own_redis: RedisServer, full_redis: Callable[[bool], None]
) -> None:
    async with AsyncReporter(own_redis.url, retry=QUICK) as reporter:
        with pytest.raises(ReportError, match="OutOfMemoryError"):
            await reporter.report("s1", "map", "during", 10)
        assert len(reporter.pending) == 1
        full_redis(False)
        await reporter.report("s1", "map", "after", 20)
    assert steps(own_redis) == ["during", "after"]


async def test_the_gateway_answers_503_with_retry_after_while_redis_is_out_of_memory(
    start_gateway: Callable[..., Gateway],
    own_redis: RedisServer,
    full_redis: Callable[[bool], None],
    http: aiohttp.ClientSession,
) -> None:
    full_redis(False)
    gateway = start_gateway(own_redis.url)
    full_redis(True)
    for path, body in (("", event()), ("/batch", [event(), event()])):
        async with http.post(f"{gateway.url}/api/workflows/progress{path}", json=body) as response:
            assert response.status == 503
            assert response.headers["Retry-After"] == "1"
            assert (await response.json())["error"] == "unavailable"
    full_redis(False)
    async with http.post(f"{gateway.url}/api/workflows/progress", json=event()) as response:
        assert response.status == 202


def test_a_permanent_failure_is_a_report_error_and_keeps_nothing(
    own_redis: RedisServer,
) -> None:
    with own_redis.client() as client:
        client.set(STREAM, "not a stream")
    with Reporter(own_redis.url, retry=QUICK) as reporter:
        with pytest.raises(ReportError, match="WRONGTYPE"):
            reporter.report("s1", "map", "step", 10)
        assert len(reporter.pending) == 0


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'"), True),
        (exceptions.BusyLoadingError("Redis is loading the dataset in memory"), True),
        (exceptions.ReadOnlyError("You can't write against a read only replica."), True),
        (exceptions.ResponseError("BUSY Redis is busy running a script."), True),
        (exceptions.TryAgainError("Multiple keys request during rehashing of slot"), True),
        (exceptions.ClusterDownError("The cluster is down"), True),
        (exceptions.MasterDownError("Link with MASTER is down"), True),
        (exceptions.ResponseError("NOREPLICAS Not enough good replicas to write."), True),
        (exceptions.ConnectionError("Error 111 connecting"), True),
        (exceptions.TimeoutError("Timeout reading from socket"), True),
        (ConnectionResetError(104, "Connection reset by peer"), True),
        (exceptions.ResponseError("WRONGTYPE Operation against a key"), False),
        (exceptions.NoPermissionError("this user has no permissions"), False),
        (exceptions.AuthenticationError("invalid username-password pair"), False),
        (exceptions.ResponseError("Error running script"), False),
    ],
)
def test_which_failures_are_transient(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient

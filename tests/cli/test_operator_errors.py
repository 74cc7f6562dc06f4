"""Mistakes an operator makes starting ``relay serve``: each told in one line, no traceback."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator

import aiohttp
import pytest
from pydantic import ValidationError

from relay.cli.main import configuration_problems
from relay.server.settings import Settings
from tests.conftest import RedisServer, free_port
from tests.helpers import Gateway, env_without_relay, until
from tests.server.test_reader_integrity import metric

# Set so the gateway does not warn that it runs open: the only warnings left are the tested ones.
CLOSED = {"RELAY_API_KEYS": "operator-key", "RELAY_TOKEN_SECRET": "operator-secret"}
SCHEMES = "redis://, rediss://, unix://, redis+cluster://, rediss+cluster:// or redis+sentinel://"


def serve(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``relay serve`` run to its end; it is expected to refuse to start."""
    return subprocess.run(
        [sys.executable, "-m", "relay", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env_without_relay(), **CLOSED, **env},
    )


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port somebody else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.mark.process
@pytest.mark.parametrize("busy", ["--port", "--metrics-port"])
def test_a_busy_port_is_one_line_and_no_listening_claim(busy_port: int, busy: str) -> None:
    ports = {"--port": str(free_port()), "--metrics-port": str(free_port()), busy: str(busy_port)}
    done = serve(*(part for flag_port in ports.items() for part in flag_port))
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert (
        lines[-1] == f"relay serve: cannot listen on 127.0.0.1:{busy_port}: address already in use"
    )
    assert [line for line in lines if "cannot listen" in line] == [lines[-1]]
    assert "Traceback" not in done.stderr
    assert "relay gateway on" not in done.stderr


@pytest.mark.process
@pytest.mark.stores("single")
def test_a_busy_port_with_a_store_stops_its_reads_quietly(busy_port: int, redis_url: str) -> None:
    # The reader has started its reads by the time the port is found busy: they
    # end with the store's connections, and nothing is left failing unseen.
    done = serve("--port", str(busy_port), "--redis-url", redis_url)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1].startswith("relay serve: cannot listen on")
    assert "Traceback" not in done.stderr
    assert "never retrieved" not in done.stderr


@pytest.mark.process
def test_an_address_not_of_this_machine_is_one_line() -> None:
    # 192.0.2.0/24 is reserved for documentation: no machine has it.
    port = free_port()
    done = serve("--host", "192.0.2.1", "--port", str(port))
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        f"relay serve: cannot listen on 192.0.2.1:{port}: cannot assign requested address"
    )
    assert "Traceback" not in done.stderr


MALFORMED_URLS = ["localhost:6379", "redis//x", "http://127.0.0.1:6379", "redis:/:hunter2@h"]


@pytest.mark.process
@pytest.mark.parametrize("url", MALFORMED_URLS)
@pytest.mark.parametrize("given_by", ["flag", "environment"])
def test_a_malformed_redis_url_is_one_line_naming_the_setting(url: str, given_by: str) -> None:
    if given_by == "flag":
        done = serve("--port", str(free_port()), "--redis-url", url)
    else:
        done = serve("--port", str(free_port()), RELAY_REDIS_URL=url)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"relay serve: --redis-url / RELAY_REDIS_URL: not a Redis URL: it must start with {SCHEMES}"
    ]
    assert "hunter2" not in done.stderr  # a password in the URL is not printed back


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "rediss://h", "unix:///run/redis.sock", "REDIS://h", ""]
)
def test_redis_urls_of_every_scheme_are_accepted(url: str) -> None:
    assert Settings(redis_url=url).redis_url == url


def test_every_problem_is_one_line_naming_its_flag_and_variable() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(redis_url="redis://h:port", port=-1)
    problems = configuration_problems(caught.value)
    assert len(problems) == 2
    assert problems[0].startswith("--redis-url / RELAY_REDIS_URL: Port could not be cast")
    assert problems[1].startswith("--port / RELAY_PORT: Input should be greater than")


def test_a_problem_of_several_settings_names_none() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(outbox_limit=10, read_count=10)
    assert configuration_problems(caught.value) == [
        "invalid configuration: outbox_limit (10) must be at least twice read_count (10)"
    ]


async def test_unreachable_redis_is_one_warning_then_readyz_says_why(
    start_gateway: Callable[..., Gateway], http: aiohttp.ClientSession
) -> None:
    nobody = free_port()
    gateway = start_gateway(f"redis://127.0.0.1:{nobody}/0", ready=False, **CLOSED)
    problems: list[str] = []

    async def says_unreachable() -> bool:
        async with http.get(f"{gateway.url}/readyz") as response:
            if response.status != 503:
                return False
            problems[:] = (await response.json())["problems"]
            return any(p.startswith("store unreachable") for p in problems)

    await until(says_unreachable, what="/readyz saying the store is unreachable")
    assert any(f"127.0.0.1:{nobody}" in problem for problem in problems)
    assert await asyncio.to_thread(gateway.stop) == 0
    logs = gateway.logs()
    warnings = [line for line in logs.splitlines() if " WARNING " in line]
    assert len(warnings) == 1, logs
    assert "store not reachable at start" in warnings[0]
    assert f"127.0.0.1:{nobody}" in warnings[0]
    assert "Traceback" not in logs
    assert "relay gateway on http://127.0.0.1:" in logs


async def test_an_outage_is_one_warning_and_its_end_is_told(
    start_gateway: Callable[..., Gateway], own_redis: RedisServer, http: aiohttp.ClientSession
) -> None:
    gateway = start_gateway(own_redis.url, **CLOSED)
    own_redis.stop()

    async def retried() -> bool:
        return await metric(http, gateway.url, "relay_redis_errors_total") >= 3

    await until(retried, what="three failed reads")
    own_redis.start()

    async def ready() -> bool:
        async with http.get(f"{gateway.url}/readyz") as response:
            return response.status == 200

    await until(ready, what="/readyz ready again")
    logs = gateway.logs()
    # Only failed reads count: that Redis restarted is a warning of its own.
    failures = [line for line in logs.splitlines() if " WARNING " in line and "retrying" in line]
    assert len(failures) == 1, logs
    assert "stream reader: Redis answers again after" in logs


def test_sigint_stops_a_serving_gateway_cleanly(start_gateway: Callable[..., Gateway]) -> None:
    gateway = start_gateway()
    assert gateway.process is not None
    gateway.process.send_signal(signal.SIGINT)
    assert gateway.stop() == 0
    assert "Traceback" not in gateway.logs()

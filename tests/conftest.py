"""Shared fixtures: a private redis-server, clean databases, and real gateway processes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest
import redis
from hypothesis import HealthCheck, settings

from tests.helpers import Gateway, wait_until

if TYPE_CHECKING:
    from tests.cluster import Cluster

# The browser and page fixtures, for every test that drives Chromium; the
# Sentinel-watched primary and replica, for the failover tests; the Docker
# engine and base image of the deployment tests.
pytest_plugins = ("tests.browser", "tests.sentinel", "tests.cluster", "tests.docker_stack")

# Generated-input tests check behaviour, never speed: a slow first example on a
# busy CI machine must not fail them.
settings.register_profile(
    "relay", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("relay")

REDIS_BINARY = shutil.which("redis-server")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A private redis-server the tests start, stop and restart at will."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        if REDIS_BINARY is None:
            pytest.fail("redis-server is not on PATH; .ci/run installs it")
        self.directory = directory
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        # The port of the primary this server replicates, started as its replica.
        self.replica_of: int | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self, *, appendonly: bool) -> list[str]:
        """The command line that starts this server."""
        assert REDIS_BINARY is not None
        command = [
            REDIS_BINARY,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "yes" if appendonly else "no",
            "--protected-mode",
            "no",
            # A replica's first sync starts at once, not after 5 s of waiting for others.
            "--repl-diskless-sync-delay",
            "0",
        ]
        if self.replica_of is not None:
            command += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        return command

    def start(self, *, appendonly: bool = False) -> None:
        self.process = subprocess.Popen(
            self.command(appendonly=appendonly),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        wait_until(lambda: _answers(client), timeout=10, what=f"redis-server on {self.port}")
        client.close()

    def stop(self, *, kill: bool = False) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            self.process.wait(timeout=10)
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One private redis-server for the whole run, never the machine's own."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


# What a suite marked ``stores`` runs against: each of its tests that takes
# ``redis_url`` runs once per kind, or once per kind its own marker names.
STORE_KINDS = ("single", "cluster")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run the tests of suites marked ``stores`` on a single Redis and on a cluster."""
    marker = metafunc.definition.get_closest_marker("stores")
    if "redis_url" in metafunc.fixturenames and marker is not None:
        # ``@pytest.mark.stores("single")`` on a test keeps it to the kinds it names.
        metafunc.parametrize("store_kind", marker.args or STORE_KINDS, indirect=True)


@pytest.fixture
def store_kind(request: pytest.FixtureRequest) -> str:
    """``single`` or ``cluster``: the kind of Redis ``redis_url`` names."""
    kind: str = getattr(request, "param", "single")
    return kind


@pytest.fixture
def redis_url(request: pytest.FixtureRequest, store_kind: str) -> str:
    """The URL of a private, emptied store: a redis-server, or a cluster's seeds."""
    if store_kind == "cluster":
        cluster: Cluster = request.getfixturevalue("redis_cluster")
        return cluster.url
    redis_server: RedisServer = request.getfixturevalue("redis_server")
    with redis_server.client() as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, to kill and restart."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop(kill=True)


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    """Start real ``relay serve`` processes; all are stopped after the test.

    Each is waited for until ready, or with ``ready=False`` until it serves at all;
    ``flags`` are more ``relay serve`` flags, ``env`` more environment variables.
    """
    started: list[Gateway] = []

    def start(
        redis_url: str | None = None,
        *,
        ready: bool = True,
        flags: Sequence[str] = (),
        **env: str,
    ) -> Gateway:
        port = free_port()
        args = [sys.executable, "-m", "relay", "serve", "--port", str(port), *flags]
        if redis_url:
            args += ["--redis-url", redis_url]
        log = tmp_path / f"gateway-{port}.log"
        environment = {**os.environ, **env}
        environment.pop("RELAY_REDIS_URL", None)
        gateway = Gateway(args, port, log, environment)
        started.append(gateway)
        gateway.start(ready=ready)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP and WebSocket client session."""
    async with aiohttp.ClientSession() as session:
        yield session


# Fixtures, directly used or through another fixture, that start processes of
# their own or a headless Chromium.
FIXTURE_MARKERS = {
    "start_gateway": pytest.mark.process,
    "module_gateway": pytest.mark.process,
    "own_redis": pytest.mark.process,
    "sentinels": pytest.mark.process,
    "own_cluster": pytest.mark.process,
    "browser": pytest.mark.browser,
    "page": pytest.mark.browser,
    "docker_engine": pytest.mark.docker,
}
TESTS = Path(__file__).resolve().parent
# Modules that need a tool beside Python and redis-server.
MODULE_MARKERS = {
    TESTS / "e2e" / "test_browser.py": pytest.mark.browser,
    TESTS / "e2e" / "test_compose.py": pytest.mark.docker,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by what they start, so a quick run can leave them out (see README)."""
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            if fixture in FIXTURE_MARKERS:
                item.add_marker(FIXTURE_MARKERS[fixture])
        if item.path.resolve() in MODULE_MARKERS:
            item.add_marker(MODULE_MARKERS[item.path.resolve()])


def pytest_configure(config: pytest.Config) -> None:
    # Gateways started by tests must not pick up a developer's settings.
    for name in list(os.environ):
        if name.startswith("RELAY_"):
            del os.environ[name]


@pytest.fixture(scope="module")
def module_gateway_env() -> dict[str, str]:
    """More environment variables for ``module_gateway``; a module overrides this fixture."""
    return {}


@pytest.fixture(scope="module")
def module_gateway(
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    module_gateway_env: dict[str, str],
) -> Iterator[Gateway]:
    """One real gateway shared by a module's tests (for generated-input tests)."""
    port = free_port()
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    args = [sys.executable, "-m", "relay", "serve", "--port", str(port)]
    args += ["--redis-url", redis_server.url]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    environment.update(module_gateway_env)
    gateway = Gateway(args, port, log, environment)
    gateway.start()
    yield gateway
    gateway.stop()

"""The systems under test: how each is started, where it listens, and stopping it."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import redis.asyncio
from config import NODE_PEER_DIR, PEERS_DIR, RELAY_WORKERS, WORKFLOW_TYPE, Config
from procs import Proc, free_port, spawn, stop_all, wait_http_ok

INSTANCE_NAMES = ("A", "B")
REDIS_START_TIMEOUT = 10.0

_PYTHON = sys.executable


def _relay_argv(port: int, redis_url: str) -> list[str]:
    return [_PYTHON, "-m", "relay", "serve", "--port", str(port), "--redis-url", redis_url]


def _relay_workers_argv(port: int, redis_url: str) -> list[str]:
    return [*_relay_argv(port, redis_url), "--workers", str(RELAY_WORKERS)]


def _node_argv(port: int, redis_url: str) -> list[str]:
    server = str(NODE_PEER_DIR / "server.js")
    return ["node", server, "--port", str(port), "--redis-url", redis_url]


def _pysio_argv(port: int, redis_url: str) -> list[str]:
    server = str(PEERS_DIR / "pysio_server.py")
    return [_PYTHON, server, "--port", str(port), "--redis-url", redis_url]


def _bare_argv(port: int, redis_url: str) -> list[str]:
    return [_PYTHON, str(PEERS_DIR / "bare_aiohttp.py"), "--port", str(port)]


@dataclass(frozen=True)
class SystemSpec:
    """One system: its start command, instance count, readiness path and client protocol.

    ``client`` is the load generator's kind: ``ws`` (a bare WebSocket), ``sio``
    (socket.io-client over the websocket transport alone) or ``sio-polling``
    (socket.io-client's default: long-polling, then the upgrade to a WebSocket).
    """

    argv: Callable[[int, str], list[str]]
    instances: int
    ready_path: str
    client: str
    uses_redis: bool = True
    env: dict[str, str] = field(default_factory=dict)
    workers: int = 1
    """Processes per instance that listen on its port (``relay serve --workers``)."""


_RELAY_ENV = {"RELAY_LOG_LEVEL": "warning"}

SPECS = {
    "relay": SystemSpec(_relay_argv, 2, "/readyz", "ws", env=_RELAY_ENV),
    # The same gateways, with subscribers on /socket.io/ instead of /ws.
    "relay-sio": SystemSpec(_relay_argv, 2, "/readyz", "sio", env=_RELAY_ENV),
    "relay-sio-poll": SystemSpec(_relay_argv, 2, "/readyz", "sio-polling", env=_RELAY_ENV),
    # The same two gateways, each of them RELAY_WORKERS processes on its port.
    "relay-workers": SystemSpec(
        _relay_workers_argv, 2, "/readyz", "ws", env=_RELAY_ENV, workers=RELAY_WORKERS
    ),
    "node": SystemSpec(_node_argv, 2, "/healthz", "sio"),
    "pysio": SystemSpec(_pysio_argv, 2, "/healthz", "sio"),
    "bare": SystemSpec(_bare_argv, 1, "/healthz", "ws", uses_redis=False),
}


@dataclass
class Instance:
    """One server process and its port."""

    name: str
    port: int
    proc: Proc

    @property
    def base_url(self) -> str:
        """Its HTTP root."""
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Deployment:
    """A running system: its instances and the Redis behind them."""

    system: str
    client: str
    instances: list[Instance]
    redis_proc: Proc | None = None
    redis_url: str = ""

    @property
    def servers(self) -> list[Proc]:
        """Every process that serves: instances, then Redis."""
        procs = [instance.proc for instance in self.instances]
        return procs + ([self.redis_proc] if self.redis_proc else [])

    def publish_url(self, index: int = 0) -> str:
        """The single-event POST endpoint of one instance."""
        return self.instances[index].base_url + "/api/workflows/progress"

    def subscribe_url(self, index: int) -> str:
        """Where a subscriber of the load generator connects on one instance."""
        instance = self.instances[index]
        if self.system in ("relay", "relay-workers"):
            return f"ws://127.0.0.1:{instance.port}/ws?workflow_type={WORKFLOW_TYPE}"
        if self.client == "ws":
            return f"ws://127.0.0.1:{instance.port}/ws"
        return instance.base_url

    def subscribe_urls(self) -> list[str]:
        """One subscriber URL per instance; subscribers are spread over them in turn."""
        return [self.subscribe_url(i) for i in range(len(self.instances))]


async def _start_redis(cfg: Config, tag: str) -> tuple[Proc, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not on PATH")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    argv += ["no", "--dir", str(cfg.log_dir)]
    proc = await spawn(f"{tag}-redis", argv, cfg.log_dir)
    client = redis.asyncio.Redis(port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + REDIS_START_TIMEOUT
    try:
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError, OSError):
                if await client.ping():
                    return proc, f"redis://127.0.0.1:{port}/0"
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()
    await proc.stop()
    raise RuntimeError(f"redis-server did not answer on port {port}; see {proc.log}")


@contextlib.asynccontextmanager
async def deploy(system: str, cfg: Config, tag: str) -> AsyncIterator[Deployment]:
    """Start ``system`` (its Redis first), wait until every instance is ready, stop all after."""
    spec = SPECS[system]
    started: list[Proc] = []
    try:
        redis_proc, redis_url = None, ""
        if spec.uses_redis:
            redis_proc, redis_url = await _start_redis(cfg, tag)
            started.append(redis_proc)
        instances = []
        for name in INSTANCE_NAMES[: spec.instances]:
            port = free_port()
            argv = spec.argv(port, redis_url)
            proc = await spawn(
                f"{tag}-{system}-{name}", argv, cfg.log_dir, env=spec.env, forks=spec.workers > 1
            )
            started.append(proc)
            instances.append(Instance(name, port, proc))
        for instance in instances:
            await wait_http_ok(
                instance.base_url + spec.ready_path,
                instance.proc,
                port=instance.port,
                listening=spec.workers,
            )
        yield Deployment(system, spec.client, instances, redis_proc, redis_url)
    finally:
        await stop_all(started)

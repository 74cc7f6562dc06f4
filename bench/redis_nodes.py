"""The Redis a cluster bench runs on: one redis-server, or a cluster it starts itself.

A cluster is three primaries with a replica each, on free loopback ports whose
cluster bus port (10,000 above) is free too, joined with ``redis-cli --cluster
create`` and used once every node says ``cluster_state:ok``. Every node is its
own process group and is stopped by its pid. Redis CPU is read from each
node's ``INFO cpu``, so it counts the server's own threads only.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio
from procs import PROTECTED_PORT, Proc, spawn, stop_all
from redis.asyncio.cluster import RedisCluster

PRIMARIES = 3
SLOTS = 16384
BUS_OFFSET = 10_000
HIGHEST_PORT = 65535 - BUS_OFFSET
START_TIMEOUT = 10.0
SETTLE_TIMEOUT = 30.0

AnyRedis = redis.asyncio.Redis | RedisCluster


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_node_port(taken: set[int]) -> int:
    """A free port at most 55535 whose bus port is free too, not in ``taken``."""
    for _ in range(1000):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        clash = taken & {port, port + BUS_OFFSET, port - BUS_OFFSET}
        usable = port <= HIGHEST_PORT and port != PROTECTED_PORT and not clash
        if usable and _free(port + BUS_OFFSET):
            return port
    raise RuntimeError("no free cluster port found")


@dataclass
class RedisNodes:
    """The running redis-server processes, their ports and the URL a gateway is given."""

    procs: list[Proc]
    ports: list[int]
    cluster: bool

    @property
    def url(self) -> str:
        """``redis://`` for one server, ``redis+cluster://`` naming every node as a seed."""
        if not self.cluster:
            return f"redis://127.0.0.1:{self.ports[0]}/0"
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports) + "/0"

    def client(self, *, decode: bool = True) -> AnyRedis:
        """An asyncio client: a ``RedisCluster`` on a cluster (it follows the slots)."""
        if self.cluster:
            return RedisCluster(host="127.0.0.1", port=self.ports[0], decode_responses=decode)
        return redis.asyncio.Redis(port=self.ports[0], decode_responses=decode)

    async def primary_ports(self) -> list[int]:
        """The ports of the nodes that serve slots now, in port order."""
        primaries = []
        for port in self.ports:
            async with redis.asyncio.Redis(port=port, decode_responses=True) as node:
                role = (await node.info("replication"))["role"]
            if role == "master":
                primaries.append(port)
        return primaries

    async def flush(self) -> None:
        """Empty every primary (replicas follow)."""
        for port in await self.primary_ports():
            async with redis.asyncio.Redis(port=port) as node:
                await node.flushall()

    async def shard_of(self, keys: list[str]) -> dict[str, int]:
        """The port of the primary serving each key (the one server when not a cluster)."""
        if not self.cluster:
            return dict.fromkeys(keys, self.ports[0])
        client = RedisCluster(host="127.0.0.1", port=self.ports[0])
        try:
            await client.initialize()
            shards = {}
            for key in keys:
                node = client.get_node_from_key(key)
                if node is None:
                    raise RuntimeError(f"no cluster node serves {key}")
                shards[key] = int(node.port)
            return shards
        finally:
            await client.aclose()

    async def cpu_seconds(self) -> dict[int, float]:
        """Each node's CPU so far (``used_cpu_user + used_cpu_sys``), by port."""
        used = {}
        for port in self.ports:
            async with redis.asyncio.Redis(port=port, decode_responses=True) as node:
                info: dict[str, Any] = await node.info("cpu")
            used[port] = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        return used

    async def reset_stats(self) -> None:
        """``CONFIG RESETSTAT`` on every node, so ``INFO commandstats`` counts from now."""
        for port in self.ports:
            async with redis.asyncio.Redis(port=port) as node:
                await node.config_resetstat()

    async def command_calls(self) -> int:
        """Commands every node ran since the last reset, CONFIG (the reset itself) left out."""
        calls = 0
        for port in self.ports:
            async with redis.asyncio.Redis(port=port, decode_responses=True) as node:
                stats: dict[str, Any] = await node.info("commandstats")
            calls += sum(
                int(stat["calls"]) for name, stat in stats.items() if name != "cmdstat_config"
            )
        return calls


async def _ping(port: int, proc: Proc) -> None:
    client = redis.asyncio.Redis(port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while time.monotonic() < deadline:
            if not proc.alive():
                break
            with contextlib.suppress(redis.RedisError, OSError):
                if await client.ping():
                    return
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()
    raise RuntimeError(f"redis-server did not answer on port {port}; see {proc.log}")


async def _start_node(binary: str, port: int, tag: str, log_dir: Path, cluster: bool) -> Proc:
    directory = log_dir / f"{tag}-{port}"
    directory.mkdir(parents=True, exist_ok=True)
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    argv += ["no", "--dir", str(directory)]
    if cluster:
        argv += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
    return await spawn(f"{tag}-redis-{port}", argv, log_dir)


async def _settled(ports: list[int]) -> bool:
    for port in ports:
        try:
            async with redis.asyncio.Redis(port=port, decode_responses=True) as node:
                info = await node.cluster("INFO")
        except redis.RedisError:
            return False
        if info.get("cluster_state") != "ok" or int(info.get("cluster_slots_ok", 0)) < SLOTS:
            return False
    return True


async def _create_cluster(ports: list[int], log_dir: Path, tag: str) -> None:
    cli = shutil.which("redis-cli")
    if cli is None:
        raise RuntimeError("redis-cli is not on PATH")
    argv = [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports)]
    argv += ["--cluster-replicas", "1", "--cluster-yes"]
    creator = await spawn(f"{tag}-cluster-create", argv, log_dir)
    try:
        code = await creator.wait(SETTLE_TIMEOUT)
    finally:
        await creator.stop()
    if code != 0:
        raise RuntimeError(f"redis-cli --cluster create failed ({code}); see {creator.log}")
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while not await _settled(ports):
        if time.monotonic() > deadline:
            raise RuntimeError("the cluster did not reach cluster_state:ok")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running_redis(log_dir: Path, tag: str, *, cluster: bool) -> AsyncIterator[RedisNodes]:
    """One redis-server, or a 3-primary cluster with a replica each; all stopped after."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not on PATH")
    started: list[Proc] = []
    ports: list[int] = []
    try:
        for _ in range(2 * PRIMARIES if cluster else 1):
            port = free_node_port(set(ports))
            ports.append(port)
            started.append(await _start_node(binary, port, tag, log_dir, cluster))
        for port, proc in zip(ports, started, strict=True):
            await _ping(port, proc)
        if cluster:
            await _create_cluster(ports, log_dir, tag)
        yield RedisNodes(started, ports, cluster)
    finally:
        await stop_all(started)

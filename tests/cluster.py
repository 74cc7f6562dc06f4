"""A Redis Cluster of three primaries, each with one replica, all on loopback.

Registered as a plugin in ``tests/conftest.py``. ``redis_cluster`` is one
cluster for the whole run, emptied before each test that asks for it;
``own_cluster`` is a test's own, to kill a primary of. Every server is started
on a free port in a temporary directory and stopped by its pid afterwards.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from tests.conftest import RedisServer
from tests.helpers import wait_until

PRIMARIES = 3
SLOTS = 16384
# Short, so that a replica takes over seconds after its primary stops answering.
NODE_TIMEOUT_MS = 1000
SETTLE_TIMEOUT = 30.0
REDIS_CLI = shutil.which("redis-cli")
# A node listens for its peers 10000 above its own port, so both must be free
# and the port at most 55535.
BUS_OFFSET = 10000
PORT_RANGE = (20000, 45000)


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port() -> int:
    """A port whose cluster bus port is free too."""
    while True:
        port = random.randint(*PORT_RANGE)
        if _free(port) and _free(port + BUS_OFFSET):
            return port


class ClusterNode(RedisServer):
    """One ``redis-server`` with cluster mode on, its node table in its own directory."""

    def command(self, *, appendonly: bool) -> list[str]:
        return [
            *super().command(appendonly=appendonly),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(self.directory / "nodes.conf"),
            "--cluster-node-timeout",
            str(NODE_TIMEOUT_MS),
            # A replica whose primary was down long takes over all the same.
            "--cluster-replica-validity-factor",
            "0",
        ]


class Cluster:
    """Three primaries and three replicas, and what they say about each other."""

    def __init__(self, directory: Path, primaries: int = PRIMARIES) -> None:
        self.nodes = []
        for n in range(2 * primaries):
            node_directory = directory / f"node-{n}"
            node_directory.mkdir()
            self.nodes.append(ClusterNode(node_directory, free_cluster_port()))

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        """The ``redis+cluster://`` URL naming every node as a seed."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.ports)
        return f"redis+cluster://{hosts}/0"

    @property
    def seed_url(self) -> str:
        """A plain URL of one node, for clients that find out they face a cluster."""
        return self.nodes[0].url

    def start(self) -> None:
        if REDIS_CLI is None:
            pytest.fail("redis-cli is not on PATH; .ci/run installs it")
        for node in self.nodes:
            node.start()
        subprocess.run(
            [
                REDIS_CLI,
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in self.ports),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=SETTLE_TIMEOUT,
        )
        self.wait_settled()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop(kill=True)

    def wait_settled(self) -> None:
        """Wait until every running node agrees that all slots are served."""
        wait_until(self._settled, timeout=SETTLE_TIMEOUT, what="the cluster to settle")

    def _settled(self) -> bool:
        for node in self.nodes:
            if node.process is None:
                continue
            try:
                with redis.Redis(port=node.port, decode_responses=True, socket_timeout=1) as c:
                    info = c.cluster("INFO")
                    replication = c.info("replication")
            except redis.RedisError:
                return False
            # redis-py reads CLUSTER INFO into a dict of text values.
            if info.get("cluster_state") != "ok" or int(info.get("cluster_slots_ok", 0)) < SLOTS:
                return False
            # A primary whose replica runs but has not synced yet could not fail over.
            lonely = replication.get("role") == "master" and not replication.get("connected_slaves")
            if lonely and self._has_live_replica(node.port):
                return False
        return True

    def _has_live_replica(self, port: int) -> bool:
        """Whether a running node replicates the primary on ``port``."""
        for node in self.nodes:
            if node.process is None or node.port == port:
                continue
            with redis.Redis(port=node.port, decode_responses=True, socket_timeout=1) as c:
                info = c.info("replication")
            if info.get("role") == "slave" and int(info.get("master_port", 0)) == port:
                return True
        return False

    def primary_ports(self) -> list[int]:
        """The ports of the running primaries, as the cluster sees them now."""
        ports = []
        for node in self.nodes:
            if node.process is None:
                continue
            with redis.Redis(port=node.port, decode_responses=True, socket_timeout=1) as c:
                if c.info("replication").get("role") == "master":
                    ports.append(node.port)
        return ports

    def node(self, port: int) -> ClusterNode:
        return next(node for node in self.nodes if node.port == port)

    def flush(self) -> None:
        """Empty every primary (their replicas follow)."""
        for port in self.primary_ports():
            with redis.Redis(port=port) as client:
                client.flushall()

    def client(self) -> RedisCluster:
        """A blocking cluster client with text answers, for a test's own reads and writes."""
        return RedisCluster(host="127.0.0.1", port=self.ports[0], decode_responses=True)


def _started(directory: Path) -> Cluster:
    cluster = Cluster(directory)
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="session")
def cluster_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One three-primary cluster for the whole run."""
    cluster = _started(tmp_path_factory.mktemp("cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_cluster(cluster_servers: Cluster) -> Cluster:
    """The run's cluster, emptied before the test."""
    cluster_servers.wait_settled()
    cluster_servers.flush()
    return cluster_servers


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of this test's own, to kill nodes of."""
    cluster = _started(tmp_path)
    yield cluster
    cluster.stop()

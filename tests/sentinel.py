"""A Redis primary, one replica and three sentinels watching them, all on loopback.

Registered as a plugin in ``tests/conftest.py``: a test asks for ``sentinels``
by name (and is marked ``process`` for it). Every process is started on a free
port in the test's own directory and stopped by its pid afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import REDIS_BINARY, RedisServer
from tests.helpers import wait_until

SERVICE = "relay"
QUORUM = 2
SENTINELS = 3
# Short, so that a failover takes seconds: the primary is taken for down after
# a second without an answer, and a failover that stalls is tried again soon.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000
SETTLE_TIMEOUT = 20.0


class SentinelServer(RedisServer):
    """One ``redis-server --sentinel`` watching the service's primary."""

    def __init__(self, directory: Path, primary_port: int) -> None:
        directory.mkdir()
        super().__init__(directory)
        self.primary_port = primary_port

    def command(self, *, appendonly: bool) -> list[str]:
        # The sentinel rewrites its file with what it learns, so each has its own.
        config = self.directory / "sentinel.conf"
        config.write_text(
            "\n".join(
                [
                    f"port {self.port}",
                    "bind 127.0.0.1",
                    f"dir {self.directory}",
                    "sentinel resolve-hostnames no",
                    f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary_port} {QUORUM}",
                    f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
                    f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
                    f"sentinel parallel-syncs {SERVICE} 1",
                    "",
                ]
            )
        )
        assert REDIS_BINARY is not None
        return [REDIS_BINARY, str(config), "--sentinel"]


class Sentinels:
    """The primary, its replica and the sentinels, and what they say about each other."""

    def __init__(self, directory: Path) -> None:
        self.primary = RedisServer(directory / "primary")
        self.replica = RedisServer(directory / "replica")
        for server in (self.primary, self.replica):
            server.directory.mkdir()
        self.replica.replica_of = self.primary.port
        self.sentinels = [
            SentinelServer(directory / f"sentinel-{n}", self.primary.port) for n in range(SENTINELS)
        ]

    def url(self, *, db: int = 0) -> str:
        """The ``redis+sentinel://`` URL of the service."""
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/{db}"

    def start(self) -> None:
        self.primary.start()
        self.replica.start()
        wait_until(self._replica_in_sync, timeout=SETTLE_TIMEOUT, what="the replica to sync")
        for sentinel in self.sentinels:
            sentinel.start()
        # A failover needs a quorum that agrees and a majority that elects:
        # every sentinel must know the others, and the replica to promote.
        wait_until(self._sentinels_settled, timeout=SETTLE_TIMEOUT, what="the sentinels to meet")

    def stop(self) -> None:
        for server in (*self.sentinels, self.replica, self.primary):
            server.stop(kill=True)

    def primary_port(self) -> int | None:
        """The port of the primary the first sentinel that answers names."""
        for sentinel in self.sentinels:
            if sentinel.process is None:
                continue
            try:
                with redis.Redis(port=sentinel.port, socket_timeout=1) as client:
                    address = client.sentinel_get_master_addr_by_name(SERVICE)
            except redis.RedisError:
                continue
            if address:
                return int(address[1])
        return None

    def _replica_in_sync(self) -> bool:
        with self.primary.client() as client:
            info = client.info("replication")
        replica = info.get("slave0")
        return isinstance(replica, dict) and replica.get("state") == "online"

    def _sentinels_settled(self) -> bool:
        for sentinel in self.sentinels:
            with redis.Redis(port=sentinel.port, decode_responses=True) as client:
                state = client.sentinel_master(SERVICE)
            if int(state["num-other-sentinels"]) < SENTINELS - 1 or int(state["num-slaves"]) < 1:
                return False
        return True


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[Sentinels]:
    """A primary and a replica watched by three sentinels, settled and ready to fail over."""
    cluster = Sentinels(tmp_path)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()

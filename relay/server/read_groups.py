"""The reader's blocking reads: one ``XREAD BLOCK`` per group of streams sharing a hash slot.

Redis Cluster refuses an ``XREAD`` over keys of different slots, so the
reader keeps one pending read per *slot group* and handles whichever returns
first. On a single Redis every stream and the announcements form one group:
one ``XREAD`` over the reader's own connection, exactly as before.

On a cluster each group's read goes to the primary serving its slot, over a
plain client of that node owned here (the cluster client cannot block on one
node for a read of many keys).

Reads block long (``RELAY_READ_BLOCK_MS``), since nothing needs them to return
when idle: a group whose streams change has its read cancelled, which drops
that one connection, and is read again at once. An idle reader therefore
costs one read per group per block, not one ``XREAD`` naming every stream
twice a second. Topology changes are found by the reader's ticks (every
primary's run id) and by errors, after which every read is issued anew (and
on a cluster the slot map is read again and groups move).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException, RedisError

logger = logging.getLogger(__name__)

# The single Redis's one group.
SINGLE_GROUP = 0
# A cluster's hash slots: no node serves more slot groups than that.
SLOTS = 16_384
# How long the first read after an error blocks, so that it soon tells the group recovered.
RECOVERY_BLOCK_MS = 100
# Beyond the block, how long a node connection waits for an answer.
SOCKET_MARGIN = 5.0
# What redis-py may raise for a store that is out of reach or reconfiguring:
# the cluster client raises some of it outside RedisError.
STORE_ERRORS: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, OSError)


class ReadGroups:
    """The groups' streams, positions as text, and each group's pending read.

    ``connection`` is the reader's client: a plain one (a single Redis,
    Sentinel, the embedded store) is read directly; a cluster client is only
    asked for the slot map and the nodes' connection settings.
    """

    def __init__(self, connection: Redis | RedisCluster, *, count: int, block_ms: int) -> None:
        self._connection = connection
        self._cluster: RedisCluster | None = (
            connection if isinstance(connection, RedisCluster) else None
        )
        self._count = count
        self._block_ms = block_ms
        # Per group, what XREAD is given: each stream's position as text.
        # Kept up to date in place, so issuing a read formats and copies nothing.
        self._streams: dict[int, dict[str, str]] = {}
        self._group_of: dict[str, int] = {}
        # Per group, bumped whenever a position moves other than by a read of
        # it: a read issued before is stale, and its answer is dropped.
        self._generations: dict[int, int] = {}
        # Each read issued, with its group and that group's generation then;
        # the one pending read of each group; the groups with none.
        self._pending: dict[asyncio.Task[Any], tuple[int, int]] = {}
        self._reading: dict[int, asyncio.Task[Any]] = {}
        self._unread: set[int] = set()
        # Reads that finished, in order, and a wake-up for whoever waits on them:
        # waiting costs the same however many groups are pending.
        self._done: list[asyncio.Task[Any]] = []
        self._wakeup = asyncio.Event()
        self._held_until: dict[int, float] = {}
        # Cluster only: the node serving each group, and a client per node.
        self._nodes: dict[int, str] = {}
        self._clients: dict[str, Redis] = {}
        self._remap = True

    def group_of(self, key: str) -> int:
        """The group ``key`` belongs to: its hash slot on a cluster."""
        return SINGLE_GROUP if self._cluster is None else self._cluster.keyslot(key)

    def set(self, key: str, position: str) -> None:
        """Read ``key`` after ``position`` from now on; a pending read of its group is stale."""
        group = self._group_of.get(key)
        if group is None:
            group = self._group_of[key] = self.group_of(key)
        self._streams.setdefault(group, {})[key] = position
        if group not in self._reading:
            self._unread.add(group)
        self._invalidate(group)

    def advance(self, key: str, position: str) -> None:
        """Record what a read of ``key`` returned up to: the next read goes on from there."""
        self._streams[self._group_of[key]][key] = position

    def remove(self, key: str) -> None:
        """Stop reading ``key``."""
        group = self._group_of.pop(key, None)
        if group is None:
            return
        streams = self._streams[group]
        streams.pop(key, None)
        self._invalidate(group)
        if not streams:
            del self._streams[group]
            self._unread.discard(group)
            # A group gone is not failing any more: nothing is left to read.
            self._held_until.pop(group, None)
            self._nodes.pop(group, None)

    def _invalidate(self, group: int) -> None:
        self._generations[group] = self._generations.get(group, 0) + 1
        # The pending read blocks on what the group no longer is: cancelled
        # (its connection is dropped) so that the next one is issued at once.
        task = self._reading.get(group)
        if task is not None:
            task.cancel()

    def hold(self, group: int, until: float) -> None:
        """Issue no read of ``group`` before ``until`` (loop time): it is backing off."""
        self._held_until[group] = until

    def release(self, group: int) -> None:
        """The group's last read worked: no more backing off."""
        self._held_until.pop(group, None)

    def failing(self) -> bool:
        """Whether some group is backing off after an error."""
        return bool(self._held_until)

    def refresh_topology(self) -> None:
        """After errors, a restart or a failover: issue every read anew, on a new slot map.

        A read blocked on a connection to a server that went away may only
        fail at its socket timeout, a whole block later.
        """
        self._remap = True
        if self._cluster is None:
            # On a cluster, _map moves the groups whose node changed.
            for group in self._streams:
                self._invalidate(group)

    async def _map(self) -> None:
        """Map each group to the primary serving its slot; move reads that changed node."""
        cluster = self._cluster
        if cluster is None or not self._remap:
            return
        manager = cluster.nodes_manager
        await manager.initialize()
        self._remap = False
        primaries = {node.name for node in cluster.get_primaries()}
        for group in self._streams:
            node = manager.get_node_from_slot(group)
            if self._nodes.get(group) != node.name:
                self._nodes[group] = node.name
                self._invalidate(group)
        for name in set(self._clients) - primaries:
            await self._clients.pop(name).aclose()

    def _client_for(self, group: int) -> Redis:
        cluster = self._cluster
        if cluster is None:
            assert isinstance(self._connection, Redis)
            return self._connection
        node = cluster.nodes_manager.get_node_from_slot(group)
        self._nodes[group] = node.name
        client = self._clients.get(node.name)
        if client is None:
            client = self._clients[node.name] = self._node_client(node)
        return client

    def _node_client(self, node: ClusterNode) -> Redis:
        """A plain client of one primary, with the cluster's own connection settings."""
        settings = dict(node.connection_kwargs)
        # One connection per slot group the node serves: the cluster client's
        # cap per node (100 by default) is for commands, not for held reads.
        settings["max_connections"] = SLOTS
        command_timeout = settings.get("socket_timeout") or SOCKET_MARGIN
        settings["socket_timeout"] = self._block_ms / 1000 + command_timeout
        pool = ConnectionPool(connection_class=node.connection_class, **settings)
        return Redis(connection_pool=pool)

    async def _read(self, client: Redis, streams: dict[str, str], block_ms: int) -> Any:
        given: Any = streams
        return await client.xread(given, count=self._count, block=block_ms)

    def _block_for(self, group: int) -> int:
        """How long a read of ``group`` blocks: briefly while it recovers from an error.

        A recovering group counts as failing until a read of it answers, and
        an idle one would answer only after a whole long block.
        """
        return (
            min(self._block_ms, RECOVERY_BLOCK_MS) if group in self._held_until else self._block_ms
        )

    async def _issue(self, now: float) -> None:
        await self._map()
        loop = asyncio.get_running_loop()
        for group in list(self._unread):
            if self._held_until.get(group, now) > now:
                continue
            task = loop.create_task(
                self._read(self._client_for(group), self._streams[group], self._block_for(group))
            )
            self._unread.discard(group)
            self._reading[group] = task
            self._pending[task] = (group, self._generations.get(group, 0))
            task.add_done_callback(self._finish)

    def _finish(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled():
            # Retrieved here: _finished hands the error on, and a read that fails
            # after aclose() gave up on it (its connection closed under it) means nothing.
            task.exception()
        self._done.append(task)
        self._wakeup.set()

    async def wait(
        self, within: float, stop: asyncio.Event
    ) -> Iterator[tuple[int, Any, BaseException | None]]:
        """Issue the reads missing, wait up to ``within`` s for one, hand on what returned.

        Yields ``(group, answer, error)`` per finished read that is not stale;
        returns early when ``stop`` is set.
        """
        loop = asyncio.get_running_loop()
        await self._issue(loop.time())
        for group, until in self._held_until.items():
            if group not in self._reading:
                within = min(within, max(until - loop.time(), 0))
        self._wakeup.clear()
        if not self._done and not stop.is_set():
            waking = loop.create_task(self._wakeup.wait())
            stopping = loop.create_task(stop.wait())
            try:
                await asyncio.wait(
                    [waking, stopping], timeout=within, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                waking.cancel()
                stopping.cancel()
        return self._finished()

    def _finished(self) -> Iterator[tuple[int, Any, BaseException | None]]:
        done, self._done = self._done, []
        answers = []
        for task in done:
            issued = self._pending.pop(task, None)
            if issued is None:
                continue  # closed meanwhile
            group, generation = issued
            if self._reading.get(group) is task:
                del self._reading[group]
                if group in self._streams:
                    self._unread.add(group)
            if task.cancelled():
                continue
            error = task.exception()
            if generation != self._generations.get(group, 0):
                continue
            answers.append((group, None if error else task.result(), error))
        return iter(answers)

    async def aclose(self, grace: float) -> None:
        """Cancel every pending read (waiting up to ``grace`` s) and close the node clients."""
        for task in self._pending:
            task.cancel()
        # A read cancelled while it waits on its socket may go on waiting:
        # closing the connections under it ends it at once.
        for client in self._clients.values():
            await client.connection_pool.disconnect(inuse_connections=True)
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=grace)
        self._pending.clear()
        self._reading.clear()
        self._done.clear()
        self._unread = set(self._streams)
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
        self._nodes.clear()
        self._remap = True

"""Publishing to the type streams over asyncio Redis: the write path of reporters and gateways."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic

from redis.asyncio import Redis
from typing_extensions import TypeVar

from relay.client.batching import Batcher
from relay.client.redis_urls import AsyncStore, is_cluster
from relay.protocol.entries import (
    DEFAULT_CANCEL_TTL,
    PUBLISH_BATCH,
    PUBLISH_SCRIPT,
    Publication,
    Published,
    PublishPlan,
    Receipt,
)
from relay.protocol.event import ProgressEvent
from relay.protocol.idempotency import DEFAULT_IDEMPOTENCY_TTL, KeyReused
from relay.protocol.keys import Keys
from relay.protocol.publish_rounds import (
    LoadScript,
    PublishRounds,
    TypeRegistry,
    publish_rounds,
    refuse_cluster_replicas,
)
from relay.protocol.store_errors import DEFAULT_REPLICA_TIMEOUT_MS

# The client a publisher holds; a plain Redis unless a subclass says otherwise.
StoreT = TypeVar("StoreT", bound=AsyncStore, default=Redis)


def _size(publication: Publication) -> int:
    return len(publication.events)


class StreamPublisher(Generic[StoreT]):
    """Writes events to the type streams with the publish script, batching concurrent calls.

    ``redis`` is a single Redis or a cluster (``RedisCluster``): a batch makes
    one script call per workflow type either way (see
    :mod:`relay.protocol.publish_rounds`). With ``min_replicas`` (single Redis
    only: ValueError with a cluster), every call waits (``WAIT``) until that many replicas
    acknowledged what it wrote, for up to ``replica_timeout_ms``, and raises
    :class:`~relay.protocol.store_errors.TooFewReplicas` when fewer did.
    """

    def __init__(
        self,
        redis: StoreT,
        keys: Keys,
        *,
        maxlen: int,
        cancel_ttl: int = DEFAULT_CANCEL_TTL,
        idempotency_ttl: int = DEFAULT_IDEMPOTENCY_TTL,
        min_replicas: int = 0,
        replica_timeout_ms: int = DEFAULT_REPLICA_TIMEOUT_MS,
    ) -> None:
        refuse_cluster_replicas(min_replicas, is_cluster(redis))
        self.redis = redis
        self.keys = keys
        self.maxlen = maxlen
        self.cancel_ttl = cancel_ttl
        self.idempotency_ttl = idempotency_ttl
        self.min_replicas = min_replicas
        self.replica_timeout_ms = replica_timeout_ms
        self._registry = TypeRegistry()
        self._batcher: Batcher[Publication, Published] = Batcher(
            self.write, max_batch=PUBLISH_BATCH, size=_size
        )

    async def publish(
        self, events: Sequence[ProgressEvent], *, key: str | None = None
    ) -> list[Receipt]:
        """Write ``events`` atomically and return their receipts (see :meth:`submit`)."""
        return (await self.submit(Publication(events, key))).receipts

    async def submit(self, publication: Publication) -> Published:
        """Write a publication and return its receipts.

        Concurrent calls share one round of script calls (see
        :mod:`relay.client.batching`), so each call's events are written
        together, with others' or on their own, atomically per workflow type.
        Raises :class:`~relay.protocol.idempotency.KeyReused` when its key was used for
        other events.
        """
        if not publication.events:
            return Published([])
        return await self._batcher.submit(publication)

    async def write(self, publications: list[Publication]) -> list[Published | KeyReused]:
        """Write ``publications`` now, without waiting for others to join."""
        plan = self._plan(publications)
        await self._run(plan, self._registry)
        return plan.results()

    async def recorded(self, publication: Publication) -> Published | None:
        """The answer a keyed publication was first given, if it is on record; writes nothing.

        Raises :class:`~relay.protocol.idempotency.KeyReused` when the key was used for
        other events.
        """
        plan = self._plan([publication], lookup_only=True)
        await self._run(plan, None)
        return plan.recorded()

    async def _run(self, plan: PublishPlan, registry: TypeRegistry | None) -> None:
        """Every call of ``plan`` answered, once enough replicas have what they wrote."""
        rounds = publish_rounds(
            plan,
            self.keys,
            registry,
            min_replicas=self.min_replicas,
            replica_timeout_ms=self.replica_timeout_ms,
        )
        await drive(self.redis, rounds)

    def _plan(self, publications: list[Publication], *, lookup_only: bool = False) -> PublishPlan:
        return PublishPlan(
            self.keys,
            publications,
            self.maxlen,
            self.cancel_ttl,
            self.idempotency_ttl,
            lookup_only=lookup_only,
        )


async def drive(redis: AsyncStore, rounds: PublishRounds) -> None:
    """Run the steps of ``rounds`` over an asyncio client (single Redis or cluster)."""
    answer: list[Any] | None = None
    while True:
        try:
            step = rounds.send(answer)
        except StopIteration:
            return
        if isinstance(step, LoadScript):
            await redis.script_load(PUBLISH_SCRIPT)
            answer = None
            continue
        async with redis.pipeline(transaction=False) as pipe:
            for command in step.commands:
                pipe.execute_command(*command)
            answer = await pipe.execute(raise_on_error=False)

"""Publishing to the type streams over asyncio Redis: the write path of reporters and gateways."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from relay.client.batching import Batcher
from relay.client.redis_urls import AsyncStore
from relay.protocol.entries import (
    DEFAULT_CANCEL_TTL,
    PUBLISH_BATCH,
    PUBLISH_SCRIPT,
    Publication,
    Published,
    Receipt,
    publish_args,
    receipts,
    recorded_answer,
)
from relay.protocol.event import ProgressEvent
from relay.protocol.idempotency import DEFAULT_IDEMPOTENCY_TTL, KeyReused
from relay.protocol.keys import Keys
from relay.protocol.store_errors import DEFAULT_REPLICA_TIMEOUT_MS, check_replicas


def _size(publication: Publication) -> int:
    return len(publication.events)


class StreamPublisher:
    """Writes events to the type streams with the publish script, batching concurrent calls.

    With ``min_replicas``, every call waits (``WAIT``) until that many replicas
    acknowledged what it wrote, for up to ``replica_timeout_ms``, and raises
    :class:`~relay.protocol.store_errors.TooFewReplicas` when fewer did.
    """

    def __init__(
        self,
        redis: AsyncStore,
        keys: Keys,
        *,
        maxlen: int,
        cancel_ttl: int = DEFAULT_CANCEL_TTL,
        idempotency_ttl: int = DEFAULT_IDEMPOTENCY_TTL,
        min_replicas: int = 0,
        replica_timeout_ms: int = DEFAULT_REPLICA_TIMEOUT_MS,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.maxlen = maxlen
        self.cancel_ttl = cancel_ttl
        self.idempotency_ttl = idempotency_ttl
        self.min_replicas = min_replicas
        self.replica_timeout_ms = replica_timeout_ms
        self._publish_script = redis.register_script(PUBLISH_SCRIPT)
        self._batcher: Batcher[Publication, Published] = Batcher(
            self.write, max_batch=PUBLISH_BATCH, size=_size
        )

    async def publish(
        self, events: Sequence[ProgressEvent], *, key: str | None = None
    ) -> list[Receipt]:
        """Write ``events`` atomically and return their receipts (see :meth:`submit`)."""
        return (await self.submit(Publication(events, key))).receipts

    async def submit(self, publication: Publication) -> Published:
        """Write a publication atomically and return its receipts.

        Concurrent calls share one script call (see :mod:`relay.client.batching`), so
        each call's events are written together, with others' or on their own.
        Raises :class:`~relay.protocol.idempotency.KeyReused` when its key was used for
        other events.
        """
        if not publication.events:
            return Published([])
        return await self._batcher.submit(publication)

    async def write(self, publications: list[Publication]) -> list[Published | KeyReused]:
        """Write ``publications`` in one script call now, without waiting for others to join."""
        answer = await self._run(self._args(publications))
        return receipts(answer, publications)

    async def recorded(self, publication: Publication) -> Published | None:
        """The answer a keyed publication was first given, if it is on record; writes nothing.

        Raises :class:`~relay.protocol.idempotency.KeyReused` when the key was used for
        other events.
        """
        args = self._args([publication], lookup_only=True)
        answer = await self._run(args)
        return recorded_answer(answer, publication)

    async def _run(self, args: list[int | str | bytes]) -> Any:
        """The publish script's answer, once enough replicas have what it wrote."""
        if not self.min_replicas:
            return await self._publish_script(keys=[], args=args)
        # WAIT counts the writes of its own connection, and cannot run inside
        # the script: a pipeline sends both on one connection, in one round trip.
        async with self.redis.pipeline(transaction=False) as pipe:
            # redis-py's annotation leaves out its cluster pipeline, which runs scripts too.
            await self._publish_script(keys=[], args=args, client=pipe)  # type: ignore[arg-type]
            pipe.wait(self.min_replicas, self.replica_timeout_ms)
            answer, acknowledged = await pipe.execute()
        check_replicas(acknowledged, self.min_replicas, self.replica_timeout_ms)
        return answer

    def _args(
        self, publications: list[Publication], *, lookup_only: bool = False
    ) -> list[int | str | bytes]:
        return publish_args(
            self.keys,
            publications,
            self.maxlen,
            self.cancel_ttl,
            self.idempotency_ttl,
            lookup_only=lookup_only,
        )

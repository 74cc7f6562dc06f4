"""Publishing to the type streams over asyncio Redis: the write path of reporters and gateways."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from relay.client.batching import Batcher
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


def _size(publication: Publication) -> int:
    return len(publication.events)


class StreamPublisher:
    """Writes events to the type streams with the publish script, batching concurrent calls."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        maxlen: int,
        cancel_ttl: int = DEFAULT_CANCEL_TTL,
        idempotency_ttl: int = DEFAULT_IDEMPOTENCY_TTL,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.maxlen = maxlen
        self.cancel_ttl = cancel_ttl
        self.idempotency_ttl = idempotency_ttl
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
        answer = await self._publish_script(keys=[], args=self._args(publications))
        return receipts(answer, publications)

    async def recorded(self, publication: Publication) -> Published | None:
        """The answer a keyed publication was first given, if it is on record; writes nothing.

        Raises :class:`~relay.protocol.idempotency.KeyReused` when the key was used for
        other events.
        """
        args = self._args([publication], lookup_only=True)
        answer = await self._publish_script(keys=[], args=args)
        return recorded_answer(answer, publication)

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

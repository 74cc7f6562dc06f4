"""Checks of the streams' integrity: epochs, and what a stream holds against our position.

Every stream has an epoch in Redis beside it (see :meth:`relay.protocol.keys.Keys.epoch`).
It is made when a gateway first follows the stream and replaced whenever a
gateway finds the stream's history lost or rewritten, by a compare-and-set,
so every gateway ends up with the same new epoch. A position in a stream means
something only within one epoch.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from relay.client.redis_urls import AsyncStore
from relay.protocol.keys import Keys
from relay.protocol.stream_ids import START, StreamId

# An epoch is a hex token; anything else found in its key is no epoch at all.
EPOCH_PATTERN = re.compile(r"[0-9a-f]{1,64}")
# Compare-and-set of a stream's epoch: the first gateway to notice a reset
# picks the new epoch and every other one adopts it. KEYS[1] the epoch key,
# ARGV[1] the epoch the caller knew, ARGV[2] the one it proposes. Returns the
# epoch in force afterwards.
BUMP_EPOCH_SCRIPT = """
local current = redis.call('GET', KEYS[1])
local valid = current and #current <= 64 and string.match(current, '^[0-9a-f]+$')
if not valid or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return ARGV[2]
end
return current
"""


def new_epoch() -> str:
    """A fresh epoch: random, so two gateways never propose the same one."""
    return secrets.token_hex(8)


def valid_epoch(value: object) -> str | None:
    """The epoch stored in Redis, or None when the key is missing or holds something else."""
    return value if isinstance(value, str) and EPOCH_PATTERN.fullmatch(value) else None


@dataclass(frozen=True, slots=True)
class StreamState:
    """What one followed stream holds now, as the reader's integrity check needs it."""

    kind: str
    """The key's Redis type: ``stream``, ``none`` when it is gone, or another type."""
    generated: StreamId
    """The newest id the stream ever handed out (trimming keeps it), :data:`START` if none."""
    head: StreamId
    """The newest retained entry id, :data:`START` when there is none."""
    first: StreamId
    """The oldest retained entry id, :data:`START` when there is none."""
    holds_position: bool
    """Whether the entry at the reader's position is still there (True for :data:`START`)."""
    epoch: str | None
    """The stream's epoch, None when its key is missing or invalid."""


# Error replies about one key itself (missing, or not of the type asked for):
# an answer about that key. Any other error in a pipeline (a node out of
# reach, a slot moving) says nothing about the key and is raised.
KEY_ERRORS = ("WRONGTYPE", "no such key")


def _answers(results: list[Any]) -> list[Any]:
    """A pipeline's results, raising the first error that is not about its key."""
    for result in results:
        if isinstance(result, Exception) and not (
            isinstance(result, ResponseError) and str(result).startswith(KEY_ERRORS)
        ):
            raise result
    return results


def _entry_id(entry: Any) -> StreamId:
    """The id of an entry as ``XINFO STREAM`` reports it, :data:`START` for none."""
    return StreamId.from_redis(entry[0]) if entry else START


class StreamChecks:
    """The Redis calls of the reader's integrity checks; each costs one round trip."""

    def __init__(self, redis: AsyncStore, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._bump_epoch_script = redis.register_script(BUMP_EPOCH_SCRIPT)

    async def key_types(self, keys: Sequence[str]) -> dict[str, str]:
        """The Redis type of each key (``none`` for a missing one)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.type(key)
            results = await pipe.execute()
        return {key: str(kind) for key, kind in zip(keys, results, strict=True)}

    async def ensure_epochs(self, stream_keys: Sequence[str]) -> dict[str, str | None]:
        """Each stream's epoch, created (without replacing a concurrent one) when missing."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in stream_keys:
                epoch_key = self.keys.epoch(key)
                pipe.set(epoch_key, new_epoch(), nx=True)
                pipe.get(epoch_key)
            results = await pipe.execute()
        return {key: valid_epoch(results[2 * n + 1]) for n, key in enumerate(stream_keys)}

    async def bump_epochs(self, known: Mapping[str, str | None]) -> dict[str, str]:
        """Replace each stream's ``known`` epoch with a new one, unless another gateway did.

        Returns the epochs in force afterwards, the same for every gateway;
        one round trip however many streams (on a cluster, concurrent calls:
        each runs on its own key's node, which loads the script if missing).
        """
        script = self._bump_epoch_script
        if isinstance(self.redis, RedisCluster):
            bumped = await asyncio.gather(
                *(
                    script(keys=[self.keys.epoch(key)], args=[epoch or "", new_epoch()])
                    for key, epoch in known.items()
                )
            )
            return {key: str(answer) for key, answer in zip(known, bumped, strict=True)}
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, epoch in known.items():
                args = [epoch or "", new_epoch()]
                await script(keys=[self.keys.epoch(key)], args=args, client=pipe)
            answers = await pipe.execute()
        # The script only ever leaves a valid epoch behind.
        return {key: str(answer) for key, answer in zip(known, answers, strict=True)}

    async def holding(self, entries: Sequence[tuple[str, StreamId]]) -> list[bool]:
        """For each ``(stream key, entry id)``, whether the stream still holds that entry."""
        if not entries:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, entry_id in entries:
                text = str(entry_id)
                pipe.xrange(key, min=text, max=text, count=1)
            results = _answers(await pipe.execute(raise_on_error=False))
        return [bool(found) and not isinstance(found, Exception) for found in results]

    async def stream_states(self, positions: Mapping[str, StreamId]) -> dict[str, StreamState]:
        """What each stream holds now, against the reader's ``positions``, in one round trip."""
        keys = list(positions)
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                position = str(positions[key])
                pipe.type(key)
                pipe.xinfo_stream(key)
                pipe.xrange(key, min=position, max=position, count=1)
                pipe.get(self.keys.epoch(key))
            results = _answers(await pipe.execute(raise_on_error=False))
        states: dict[str, StreamState] = {}
        for n, key in enumerate(keys):
            kind, info, at_position, epoch = results[4 * n : 4 * n + 4]
            if not isinstance(info, dict):  # no such key, or not a stream
                info = {}
            generated = info.get("last-generated-id")
            states[key] = StreamState(
                kind=str(kind),
                generated=START if generated is None else StreamId.from_redis(generated),
                head=_entry_id(info.get("last-entry")),
                first=_entry_id(info.get("first-entry")),
                holds_position=positions[key] == START
                or bool(at_position and not isinstance(at_position, Exception)),
                epoch=valid_epoch(epoch),
            )
        return states

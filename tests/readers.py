"""A gateway's parts without HTTP: its real reader, view and hub, with one catch-all subscriber."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson

from relay.server.app import build_relay
from relay.server.gateway import Gateway
from relay.server.settings import Settings
from relay.server.subscriber import Subscriber


class Following:
    """What one subscriber to ``*`` received, and the gateway parts feeding it."""

    def __init__(self, relay: Gateway) -> None:
        self.relay = relay
        self.frames: list[Any] = []
        self.task: asyncio.Task[None] | None = None

    def events(self) -> list[str]:
        """Ids of the event frames received, in order."""
        return [frame["id"] for frame in self.frames if "event" in frame]

    def controls(self, kind: str) -> list[dict[str, Any]]:
        """Control frames of one ``type`` received."""
        return [frame for frame in self.frames if frame.get("type") == kind]


@asynccontextmanager
async def following(settings: Settings, *, supervised: bool = True) -> AsyncIterator[Following]:
    """Run a gateway's reader (supervised, as ``relay serve`` does) until the block ends."""
    relay = build_relay(settings)
    found = Following(relay)

    async def send(text: str) -> None:
        decoded = orjson.loads(text)
        found.frames.extend(decoded if isinstance(decoded, list) else [decoded])

    async def close(code: int, reason: str) -> None:
        return None

    subscriber = Subscriber(send, close, limit=100_000)
    relay.hub.attach(subscriber)
    relay.hub.subscribe(subscriber, ("*", None))
    subscriber.start()
    reader = relay.reader
    found.task = asyncio.create_task(reader.supervise() if supervised else reader.run())
    try:
        await asyncio.wait_for(reader.started.wait(), 10)
        yield found
    finally:
        if found.task is not None:
            await reader.stop(found.task)
        await subscriber.stop()
        await relay.connections.aclose()

"""Subscribers for fault tests: they reconnect and resume by themselves, and keep score.

A follower records every event it receives (its stream id and the ``seq``
number the test put in its metadata) and every signal that history was lost
(``recovered: false`` on a resume, or a ``reset`` frame), so a test can count
lost, repeated and reordered events per subscriber afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson

from relay.protocol.stream_ids import StreamId

RECONNECT_DELAY = 0.05
ERRORS = (aiohttp.ClientError, OSError, TimeoutError, AssertionError, ValueError)


@dataclass(frozen=True)
class Tally:
    """What one follower got wrong."""

    lost: list[int]
    duplicated: list[str]
    reordered: list[tuple[str, str]]


class Target(Protocol):
    """Where a follower connects: a gateway, or the proxy in front of several."""

    @property
    def url(self) -> str: ...

    @property
    def ws_url(self) -> str: ...

    @property
    def port(self) -> int: ...


class Follower:
    """Base of the WebSocket and SSE followers: the score and the reconnect loop."""

    kind = ""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        gateway: Target,
        workflow_type: str,
        token: str | None = None,
    ) -> None:
        self.http = http
        self.gateway = gateway
        self.workflow_type = workflow_type
        self.query = {"token": token} if token else {}
        self.ids: list[str] = []
        self.seqs: list[int] = []
        # (what, how many events had arrived by then)
        self.signals: list[tuple[str, int]] = []
        self.connections = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return f"{self.kind} on :{self.gateway.port}"

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(*ERRORS):
                await self.follow()
            await asyncio.sleep(RECONNECT_DELAY)

    async def follow(self) -> None:
        raise NotImplementedError

    def signal(self, what: str) -> None:
        self.signals.append((what, len(self.ids)))

    def control(self, frame: dict[str, Any]) -> None:
        if frame.get("type") == "subscribed":
            self.connections += 1
            if frame.get("recovered") is False:
                self.signal("recovered: false")
        elif frame.get("type") == "reset":
            self.signal("reset")

    def event(self, entry_id: str, data: dict[str, Any]) -> None:
        self.ids.append(entry_id)
        self.seqs.append(int(data["metadata"]["seq"]))

    def tally(self, published: list[int]) -> Tally:
        """Lost (published but never received), repeated and out-of-order events."""
        got = set(self.seqs)
        repeats = [entry_id for entry_id, n in Counter(self.ids).items() if n > 1]
        keys = [StreamId.parse(entry_id) for entry_id in self.ids]
        backwards = [
            (self.ids[i], self.ids[i + 1]) for i in range(len(keys) - 1) if keys[i + 1] <= keys[i]
        ]
        return Tally([n for n in published if n not in got], repeats, backwards)


class WsFollower(Follower):
    """A WebSocket subscriber that resumes with ``since`` after every reconnect."""

    kind = "websocket"

    async def follow(self) -> None:
        async with self.http.ws_connect(self.gateway.ws_url, params=self.query, heartbeat=5) as ws:
            subscription: dict[str, Any] = {
                "action": "subscribe",
                "workflow_type": self.workflow_type,
            }
            if self.ids:
                subscription["since"] = self.ids[-1]
            await ws.send_str(orjson.dumps(subscription).decode())
            async for message in ws:
                if message.type is not aiohttp.WSMsgType.TEXT:
                    return
                decoded = orjson.loads(message.data)
                for frame in decoded if isinstance(decoded, list) else [decoded]:
                    if "event" in frame:
                        self.event(frame["id"], frame["data"])
                    else:
                        self.control(frame)


class SseFollower(Follower):
    """A Server-Sent Events subscriber that resumes with ``Last-Event-ID``."""

    kind = "sse"

    async def follow(self) -> None:
        headers = {"Last-Event-ID": self.ids[-1]} if self.ids else {}
        url = f"{self.gateway.url}/api/workflows/events"
        params = {"workflow_type": self.workflow_type, **self.query}
        timeout = aiohttp.ClientTimeout(total=None, sock_read=30)
        async with self.http.get(url, params=params, headers=headers, timeout=timeout) as response:
            response.raise_for_status()
            fields: dict[str, str] = {}
            async for raw in response.content:
                line = raw.decode().rstrip("\n")
                if line:
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
                    continue
                if "data" in fields:
                    data = orjson.loads(fields["data"])
                    if "id" in fields and fields.get("event", "").startswith("workflow:"):
                        self.event(fields["id"], data)
                    else:
                        self.control(data)
                fields = {}

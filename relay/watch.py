"""``relay watch``: follow events from a gateway in the terminal, reconnecting by itself."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import aiohttp
import orjson

logger = logging.getLogger(__name__)

RECONNECT_START = 0.2
RECONNECT_CAP = 5.0


def ws_url(gateway: str) -> str:
    """The WebSocket address of a gateway given by its HTTP address."""
    base = gateway.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :] + "/ws"
    if base.startswith("http://"):
        return "ws://" + base[len("http://") :] + "/ws"
    return base + "/ws"


def event_frames(text: str) -> Iterator[dict[str, Any]]:
    """The event frames in one server frame, which may carry a JSON array of them."""
    decoded = orjson.loads(text)
    items = decoded if isinstance(decoded, list) else [decoded]
    for item in items:
        if isinstance(item, dict) and "event" in item:
            yield item


def format_event(frame: dict[str, Any]) -> str:
    """One readable line for an event frame."""
    data = frame["data"]
    line = (
        f"{data['workflow_type']:<12} {data['session_id']:<24} "
        f"{data['progress']:>6}%  {data['status']:<16} {data['step']}"
    )
    if data.get("error"):
        line += f"  error: {data['error']}"
    return line


async def watch_events(
    gateway: str,
    workflow_type: str,
    session_id: str | None,
    *,
    as_json: bool = False,
    token: str | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Print every event of the subscription, resuming after each reconnect."""
    last_id: str | None = None
    delay = RECONNECT_START
    async with aiohttp.ClientSession() as http:
        while True:
            subscribe: dict[str, Any] = {"action": "subscribe", "workflow_type": workflow_type}
            if session_id:
                subscribe["session_id"] = session_id
            if last_id and workflow_type != "*":
                subscribe["since"] = last_id
            try:
                async with http.ws_connect(ws_url(gateway), autoping=True, heartbeat=30) as ws:
                    if token:
                        await ws.send_str(orjson.dumps({"action": "auth", "token": token}).decode())
                    await ws.send_str(orjson.dumps(subscribe).decode())
                    delay = RECONNECT_START
                    async for message in ws:
                        if message.type is not aiohttp.WSMsgType.TEXT:
                            continue
                        for frame in event_frames(message.data):
                            last_id = frame["id"]
                            line = orjson.dumps(frame).decode() if as_json else format_event(frame)
                            print(line, file=out, flush=True)
            except (aiohttp.ClientError, OSError) as exc:
                logger.debug("watch connection lost: %s", exc)
            print(f"# disconnected, reconnecting in {delay:.1f}s", file=sys.stderr, flush=True)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_CAP)

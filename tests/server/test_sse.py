"""Server-Sent Events with a real HTTP client: events, resume by Last-Event-ID, keep-alives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from relay.server.settings import Settings
from tests.helpers import event, serving


@pytest.fixture
async def base(redis_url: str) -> AsyncIterator[str]:
    settings = Settings(redis_url=redis_url, read_block_ms=100, sse_keepalive=0.2)
    async with serving(settings) as url:
        yield url


async def read_message(response: aiohttp.ClientResponse, timeout: float = 10) -> dict[str, Any]:
    """The next SSE message (fields by name; comments under ``comment``)."""
    message: dict[str, Any] = {}
    while True:
        line = (await asyncio.wait_for(response.content.readline(), timeout)).decode()
        if line == "\n":
            if message:
                return message
            continue
        name, _, value = line.rstrip("\n").partition(":")
        key = name or "comment"
        message[key] = value[1:] if value.startswith(" ") else value


async def next_event(response: aiohttp.ClientResponse) -> dict[str, Any]:
    while True:
        message = await read_message(response)
        if message.get("event", "").startswith("workflow:progress:"):
            return message


async def post(http: aiohttp.ClientSession, base: str, **fields: Any) -> str:
    async with http.post(f"{base}/api/workflows/progress", json=event(**fields)) as response:
        return str((await response.json())["id"])


async def test_events_stream_with_id_event_and_data(base: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{base}/api/workflows/events?workflow_type=map") as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        assert (await read_message(response)) == {"retry": "1000"}
        subscribed = await read_message(response)
        assert subscribed["event"] == "subscribed"
        await post(http, base, workflow_type="character")
        wanted = await post(http, base, progress=12.5)
        message = await next_event(response)
    assert message["id"] == wanted
    assert message["event"] == "workflow:progress:map"
    data = orjson.loads(message["data"])
    assert data["progress"] == 12.5
    assert data["session_id"] == "s1"


async def test_resume_with_last_event_id(base: str, http: aiohttp.ClientSession) -> None:
    ids = [await post(http, base, progress=p) for p in range(4)]
    headers = {"Last-Event-ID": ids[1]}
    url = f"{base}/api/workflows/events?workflow_type=map&session_id=s1"
    async with http.get(url, headers=headers) as response:
        await read_message(response)  # retry
        subscribed = orjson.loads((await read_message(response))["data"])
        assert subscribed["recovered"] is True
        assert [(await next_event(response))["id"] for _ in range(2)] == ids[2:]
        live = await post(http, base, progress=99)
        assert (await next_event(response))["id"] == live


async def test_keep_alive_comments(base: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{base}/api/workflows/events") as response:
        for _ in range(4):
            message = await read_message(response)
            if "comment" in message:
                assert message["comment"] == "keep-alive"
                return
    raise AssertionError("no keep-alive comment arrived")


async def test_bad_query_is_422(base: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{base}/api/workflows/events?workflow_type=Nope") as response:
        assert response.status == 422
        assert (await response.json())["detail"][0]["field"] == "workflow_type"

"""Resume with ``since``, late joiners and snapshots, in one gateway against a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from relay.client.reporters import AsyncReporter
from relay.server.settings import Settings
from tests.helpers import (
    event,
    read_back,
    receive,
    receive_events,
    serving,
    state_when,
    subscribe,
)

# Every test here runs on a single Redis and on a Redis Cluster.
pytestmark = pytest.mark.stores


def fast(redis_url: str, **overrides: Any) -> Settings:
    return Settings(redis_url=redis_url, read_block_ms=100, **overrides)


@pytest.fixture
async def base(redis_url: str) -> AsyncIterator[str]:
    async with serving(fast(redis_url)) as url:
        yield url


async def post(http: aiohttp.ClientSession, base: str, **fields: Any) -> str:
    async with http.post(f"{base}/api/workflows/progress", json=event(**fields)) as response:
        assert response.status == 202, await response.text()
        return str((await response.json())["id"])


async def test_since_replays_what_was_missed_then_goes_live(
    base: str, http: aiohttp.ClientSession
) -> None:
    ids = [await post(http, base, progress=p) for p in range(5)]
    async with http.ws_connect(f"{base}/ws") as ws:
        answer = await subscribe(ws, workflow_type="map", since=ids[1])
        assert answer["recovered"] is True
        assert [f["id"] for f in await receive_events(ws, 3)] == ids[2:]
        live = await post(http, base, progress=99)
        assert [f["id"] for f in await receive_events(ws, 1)] == [live]


async def test_resume_during_a_burst_has_no_gap_and_no_duplicate(
    base: str, redis_url: str, http: aiohttp.ClientSession
) -> None:
    async with AsyncReporter(redis_url) as reporter:
        first = await reporter.report("s1", "map", "start", 0)

        async def burst() -> list[str]:
            return [await reporter.report("s1", "map", "step", n % 100) for n in range(400)]

        publishing = asyncio.create_task(burst())
        async with http.ws_connect(f"{base}/ws") as ws:
            await asyncio.sleep(0)  # let the burst start before the resume lands
            answer = await subscribe(ws, workflow_type="map", since=first)
            assert answer["recovered"] is True
            published = await publishing
            frames = await receive_events(ws, len(published))
    assert [f["id"] for f in frames] == published


async def test_since_on_a_session_replays_only_that_session(
    base: str, http: aiohttp.ClientSession
) -> None:
    start = await post(http, base, session_id="other")
    mine = [await post(http, base, session_id="mine", progress=p) for p in (1, 2)]
    await post(http, base, session_id="other", progress=3)
    async with http.ws_connect(f"{base}/ws") as ws:
        await subscribe(ws, workflow_type="map", session_id="mine", since=start)
        assert [f["id"] for f in await receive_events(ws, 2)] == mine
        await post(http, base, session_id="other", progress=4)
        live = await post(http, base, session_id="mine", progress=5)
        assert [f["id"] for f in await receive_events(ws, 1)] == [live]


async def test_late_joiner_gets_the_latest_event_first(
    base: str, http: aiohttp.ClientSession
) -> None:
    await post(http, base, session_id="s1", progress=10)
    latest = await post(http, base, session_id="s1", progress=60, step="texturing")
    async with http.ws_connect(f"{base}/ws") as ws:
        await state_when(http, base, "s1", last_event_id=latest)
        await read_back(http, base, 2)
        await subscribe(ws, workflow_type="map", session_id="s1")
        [frame] = await receive_events(ws, 1)
        assert frame["id"] == latest
        assert frame["data"]["step"] == "texturing"
        live = await post(http, base, session_id="s1", progress=70)
        assert [f["id"] for f in await receive_events(ws, 1)] == [live]


async def test_snapshot_sends_every_active_session_of_the_type(
    base: str, http: aiohttp.ClientSession
) -> None:
    await post(http, base, session_id="a", progress=10)
    a_latest = await post(http, base, session_id="a", progress=20)
    b_latest = await post(http, base, session_id="b", progress=30)
    done = await post(http, base, session_id="c", progress=100, status="completed")
    await post(http, base, session_id="x", workflow_type="character")
    await state_when(http, base, "c", last_event_id=done)
    await read_back(http, base, 4)
    async with http.ws_connect(f"{base}/ws") as ws:
        await subscribe(ws, workflow_type="map", snapshot=True)
        frames = await receive_events(ws, 2)
        assert [f["id"] for f in frames] == [a_latest, b_latest]
        live = await post(http, base, session_id="b", progress=40)
        assert [f["id"] for f in await receive_events(ws, 1)] == [live]


async def test_trimmed_history_is_not_recovered_and_the_state_is_sent(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    async with (
        serving(fast(redis_url, stream_maxlen=10)) as base,
        http.ws_connect(f"{base}/ws") as watcher,
    ):
        await subscribe(watcher, workflow_type="map")
        first = await post(http, base, session_id="s1", progress=0)
        batch = [event(session_id="s1", progress=n % 100) for n in range(300)]
        async with http.post(f"{base}/api/workflows/progress/batch", json=batch) as response:
            last = (await response.json())["ids"][-1]
        # Trimming races the reader, so what it reads is known by what it routes.
        while (await receive_events(watcher, 1))[0]["id"] != last:
            pass
        async with http.ws_connect(f"{base}/ws") as ws:
            answer = await subscribe(ws, workflow_type="map", session_id="s1", since=first)
            assert answer["recovered"] is False
            [frame] = await receive_events(ws, 1)
            assert frame["id"] == last


async def test_more_than_the_replay_limit_is_not_recovered(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    async with serving(fast(redis_url, replay_limit=5)) as base:
        first = await post(http, base)
        ids = [await post(http, base, progress=p) for p in range(6)]
        await state_when(http, base, "s1", last_event_id=ids[-1])
        await read_back(http, base, 7)
        async with http.ws_connect(f"{base}/ws") as ws:
            assert (await subscribe(ws, workflow_type="map", since=first))["recovered"] is False
            live = await post(http, base, progress=50)
            assert [f["id"] for f in await receive_events(ws, 1)] == [live]
        async with http.ws_connect(f"{base}/ws") as ws:
            # exactly the limit after this id: ids[2:] and the live one
            assert (await subscribe(ws, workflow_type="map", since=ids[1]))["recovered"] is True
            assert [f["id"] for f in await receive_events(ws, 5)] == [*ids[2:], live]


async def test_since_beyond_the_stream_means_history_was_lost(
    base: str, http: aiohttp.ClientSession
) -> None:
    await post(http, base)
    async with http.ws_connect(f"{base}/ws") as ws:
        answer = await subscribe(ws, workflow_type="map", since="99999999999999-0")
        assert answer["recovered"] is False


async def test_since_on_a_type_not_yet_followed(base: str, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(f"{base}/ws") as ws:
        answer = await subscribe(ws, workflow_type="fresh", since="0-0")
        assert answer["recovered"] is True
        created = await post(http, base, workflow_type="fresh")
        assert [f["id"] for f in await receive_events(ws, 1)] == [created]


async def test_query_string_since_and_snapshot(base: str, http: aiohttp.ClientSession) -> None:
    ids = [await post(http, base, progress=p) for p in range(3)]
    async with http.ws_connect(f"{base}/ws?workflow_type=map&since={ids[0]}") as ws:
        assert (await receive(ws))["recovered"] is True
        assert [f["id"] for f in await receive_events(ws, 2)] == ids[1:]
    async with http.ws_connect(f"{base}/ws?workflow_type=map&snapshot=true") as ws:
        assert (await receive(ws))["type"] == "subscribed"
        assert [f["id"] for f in await receive_events(ws, 1)] == [ids[-1]]

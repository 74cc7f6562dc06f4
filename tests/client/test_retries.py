"""Retried attempts: a session reports `retrying`, and its state keeps the attempt and the error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from relay.client.reporters import AsyncReporter, HttpReporter, Reporter
from relay.server.settings import Settings
from tests.client.test_heartbeats import entries
from tests.conftest import RedisServer
from tests.helpers import serving, state_when


@pytest.fixture
async def base(redis_url: str) -> AsyncIterator[str]:
    async with serving(Settings(redis_url=redis_url, read_block_ms=100)) as url:
        yield url


def shapes(server: RedisServer, session_id: str) -> list[tuple[str, str, str | None, str | None]]:
    return [
        (f["status"], f["step"], f.get("attempt"), f.get("error"))
        for f in entries(server, session_id)
    ]


async def test_a_retried_attempt_is_reported_and_the_next_carries_its_number(
    base: str, redis_url: str, redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    retried = asyncio.Event()
    go_on = asyncio.Event()

    async def worker() -> None:
        async with (
            AsyncReporter(redis_url) as reporter,
            reporter.session("map", "again", heartbeat_interval=None) as session,
        ):
            await session.report("fetching", 30)
            try:
                raise TimeoutError("tile server timed out")
            except TimeoutError as exc:
                await session.retry(exc)
            retried.set()
            await go_on.wait()
            await session.report("fetching", 10)

    running = asyncio.create_task(worker())
    await asyncio.wait_for(retried.wait(), 10)
    state = await state_when(http, base, "again", status="retrying")
    error = "TimeoutError: tile server timed out"
    assert (state["attempt"], state["error"], state["last_error"]) == (2, error, error)
    assert state["progress"] == 30
    go_on.set()
    await asyncio.wait_for(running, 10)
    state = await state_when(http, base, "again", status="completed")
    assert (state["attempt"], state["error"], state["last_error"]) == (2, None, error)
    assert shapes(redis_server, "again") == [
        ("running", "fetching", None, None),
        ("retrying", "fetching", "2", error),
        ("running", "fetching", "2", None),
        ("completed", "fetching", "2", None),
    ]


def test_each_retry_counts_an_attempt_and_a_text_error_is_taken_as_is(
    redis_url: str, redis_server: RedisServer
) -> None:
    with (
        Reporter(redis_url) as reporter,
        reporter.session("map", "thrice", heartbeat_interval=None) as session,
    ):
        session.retry("quota exceeded")
        session.retry("quota exceeded again")
        assert session.attempt == 3
    assert shapes(redis_server, "thrice") == [
        ("retrying", "started", "2", "quota exceeded"),
        ("retrying", "started", "3", "quota exceeded again"),
        ("completed", "started", "3", None),
    ]


async def test_an_http_retry_and_a_plain_body_through_the_gateway(
    base: str, http: aiohttp.ClientSession
) -> None:
    def worker() -> None:
        with HttpReporter(base).session("map", "viahttp", heartbeat_interval=None) as session:
            session.report("rendering", 50)
            session.retry(RuntimeError("out of memory"))

    await asyncio.to_thread(worker)
    state = await state_when(http, base, "viahttp", status="completed")
    assert (state["attempt"], state["last_error"]) == (2, "RuntimeError: out of memory")
    plain = {"session_id": "plain", "workflow_type": "map", "step": "a", "progress": 5}
    async with http.post(f"{base}/api/workflows/progress", json=plain) as answer:
        assert answer.status == 202
    state = await state_when(http, base, "plain", status="running")
    assert (state["attempt"], state["last_error"]) == (1, None)
    async with http.post(f"{base}/api/workflows/progress", json={**plain, "attempt": 0}) as answer:
        assert answer.status == 422

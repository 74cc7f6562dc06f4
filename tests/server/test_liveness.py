"""Liveness: silent sessions are published stalled, completed or failed, once, by one gateway."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp
import pytest

from relay.protocol.entries import now_ms
from relay.protocol.event import ProgressEvent
from relay.protocol.frames import Envelope
from relay.server.app import build_relay
from relay.server.ingest import decode
from relay.server.liveness import LivenessRules
from relay.server.session_state import SessionState
from relay.server.settings import Settings
from tests.conftest import RedisServer
from tests.helpers import (
    event,
    read_back,
    receive_events,
    serving,
    session_state,
    state_when,
    store_client,
    subscribe,
    until,
)

# Every test here runs on a single Redis and on a Redis Cluster.
pytestmark = pytest.mark.stores

STALL_AFTER = 0.5
STREAM = "workflow:progress:map"


@asynccontextmanager
async def gateways(count: int, redis_url: str | None, **settings: Any) -> AsyncIterator[list[str]]:
    """``count`` gateways served in this process, on one store, stalling after half a second."""
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                serving(
                    Settings(
                        redis_url=redis_url, read_block_ms=50, stall_after=STALL_AFTER, **settings
                    )
                )
            )
            for _ in range(count)
        ]


async def publish(http: aiohttp.ClientSession, base: str, **fields: Any) -> str:
    async with http.post(f"{base}/api/workflows/progress", json=event(**fields)) as response:
        assert response.status == 202, await response.text()
        return str((await response.json())["id"])


def statuses(redis_url: str, session_id: str = "s1") -> list[str]:
    """The status of every entry of the session in the map stream, in order."""
    with store_client(redis_url) as client:
        entries = client.xrange(STREAM)
    return [f.get("status", "running") for _, f in entries if f["session_id"] == session_id]


async def test_a_silent_session_is_stalled_once_by_two_gateways_and_runs_again_when_heard(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    async with gateways(2, redis_url) as (first, second):
        ws = await http.ws_connect(f"{second.replace('http', 'ws')}/ws")
        await subscribe(ws, workflow_type="map")
        await publish(http, first, progress=45)
        stalled = await state_when(http, second, "s1", status="stalled")
        assert stalled["error"] == f"no report for {STALL_AFTER:g} s"
        assert (stalled["step"], stalled["progress"]) == ("analyzing", 45)
        assert stalled["metadata"] == {"details": "forests"}
        assert (await state_when(http, first, "s1", status="stalled"))["last_event_id"] == (
            stalled["last_event_id"]
        )
        frames = await receive_events(ws, 2)
        assert [f["data"]["status"] for f in frames] == ["running", "stalled"]
        # Two more stall times: neither gateway publishes a second stall event.
        await read_back(http, first, 2)
        with store_client(redis_url) as client:
            # SCAN, unlike KEYS, visits every primary of a cluster.
            marker = list(client.scan_iter(match="*:liveness:*"))
        assert len(marker) == 1
        assert marker[0].endswith(f":s1:{frames[0]['id']}")
        await publish(http, first, progress=45)
        running = await state_when(http, second, "s1", status="running")
        assert running["error"] is None
        [again] = await receive_events(ws, 1)
        assert again["data"]["status"] == "running"
        await ws.close()
        await state_when(http, first, "s1", status="stalled")
        assert statuses(redis_url) == ["running", "stalled", "running", "stalled"]


async def test_a_stalled_session_is_abandoned_once(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    async with gateways(2, redis_url, abandon_after=0.5) as (first, second):
        await publish(http, first, session_id="s1", progress=10)
        failed = await state_when(http, second, "s1", status="failed")
        assert failed["error"] == "worker stopped reporting"
        assert failed["progress"] == 10
        async with http.get(f"{first}/api/workflows/sessions/s1/events") as response:
            history = await response.json()
        assert [e["data"]["status"] for e in history] == ["running", "stalled", "failed"]
        assert statuses(redis_url) == ["running", "stalled", "failed"]


async def test_a_session_quiet_at_100_is_completed_once_inferred(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    async with gateways(2, redis_url, abandon_after=0.5) as (first, second):
        await publish(http, first, progress=100, step="rendering")
        done = await state_when(http, second, "s1", status="completed")
        assert done["metadata"] == {"details": "forests", "inferred": True}
        assert done["error"] is None
        assert done["step"] == "rendering"
        await read_back(http, first, 2)
        await read_back(http, second, 2)
        assert statuses(redis_url) == ["running", "completed"]
        async with http.get(f"{first}/api/workflows/sessions?status=completed") as response:
            listed = await response.json()
        assert [s["session_id"] for s in listed] == ["s1"]


async def test_without_inference_a_session_quiet_at_100_is_stalled(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    async with gateways(1, redis_url, infer_completion=False) as (base,):
        await publish(http, base, progress=100)
        await state_when(http, base, "s1", status="stalled")
        async with http.get(f"{base}/api/workflows/sessions?status=stalled") as response:
            listed = await response.json()
        assert [s["session_id"] for s in listed] == ["s1"]


async def test_heartbeats_keep_a_session_alive_and_reach_nobody(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    async with gateways(2, redis_url) as (first, second):
        sockets = [await http.ws_connect(f"{b.replace('http', 'ws')}/ws") for b in (first, second)]
        for ws in sockets:
            await subscribe(ws, workflow_type="map")
        ids = [await publish(http, first, progress=10)]
        # A gateway that publishes for a session before reading of it takes the
        # report as the session's first: the repeats wait until both know it.
        await state_when(http, second, "s1", last_event_id=ids[0])
        # Repeats through HTTP on both gateways and a raw XADD: all heartbeats.
        await publish(http, first, progress=10)
        await publish(http, second, progress=10)
        with store_client(redis_url) as client:
            client.xadd(
                STREAM,
                {
                    "session_id": "s1",
                    "step": "analyzing",
                    "progress": "10",
                    "metadata": '{"details":"forests"}',
                },
            )
        ids.append(await publish(http, second, progress=20))
        for ws in sockets:
            frames = await receive_events(ws, 2)
            assert [f["id"] for f in frames] == ids
        for base in (first, second):
            await read_back(http, base, 5)
            async with http.get(f"{base}/api/workflows/sessions/s1/events") as response:
                history = await response.json()
            assert [e["id"] for e in history] == ids
        # Heartbeats at a fifth of the stall time, for three stall times: never stalled.
        deadline = time.monotonic() + 3 * STALL_AFTER
        while time.monotonic() < deadline:
            await publish(http, first, progress=20)
            await asyncio.sleep(STALL_AFTER / 5)
            assert (await session_state(http, second, "s1"))["status"] == "running"
        assert statuses(redis_url).count("stalled") == 0
        for ws in sockets:
            await ws.close()


async def test_the_embedded_store_stalls_and_infers_too(http: aiohttp.ClientSession) -> None:
    async with gateways(1, None, abandon_after=0.5) as (base,):
        await publish(http, base, session_id="quiet", progress=30)
        await publish(http, base, session_id="done", progress=100)
        await state_when(http, base, "done", status="completed")
        await state_when(http, base, "quiet", status="failed")
        async with http.get(f"{base}/api/workflows/sessions/quiet/events") as response:
            history = await response.json()
        assert [e["data"]["status"] for e in history] == ["running", "stalled", "failed"]


async def test_a_store_error_is_reported_and_the_checks_go_on(
    own_redis: RedisServer, http: aiohttp.ClientSession
) -> None:
    async with gateways(1, own_redis.url) as (base,):
        await publish(http, base, progress=45)
        answers: list[Any] = []

        async def readiness() -> Any:
            async with http.get(f"{base}/readyz") as response:
                answers.append((response.status, await response.json()))
                return answers[-1]

        async def failing() -> bool:
            status, answer = await readiness()
            return status == 503 and any(
                p.startswith("liveness check failing") for p in answer["problems"]
            )

        with own_redis.client() as client:
            # Scripts are refused now: the liveness check cannot publish,
            # while the reader and the readiness probe carry on.
            client.acl_setuser("default", enabled=True, commands=["-eval", "-evalsha"])
            try:
                await until(failing, what="readiness to report the failing check")
                # The liveness check's problem alone, saying why.
                [problem] = answers[-1][1]["problems"]
                assert "permission" in problem.lower(), problem
                assert (await session_state(http, base, "s1"))["status"] == "running"
            finally:
                client.acl_setuser("default", enabled=True, commands=["+eval", "+evalsha"])
        await state_when(http, base, "s1", status="stalled")

        async def ready() -> bool:
            return bool((await readiness())[0] == 200)

        await until(ready, what="readiness once the check succeeds again")


def test_the_rules_stall_infer_and_abandon_by_the_stream_id_time() -> None:
    def state(status: str, progress: float, entry_ms: int) -> SessionState:
        # ts says "just now": the age comes from the entry id all the same.
        event = ProgressEvent(
            session_id="s1",
            workflow_type="map",
            step="a",
            progress=progress,
            status=status,
            ts=10_000_000,
        )
        return SessionState(Envelope.of(f"{entry_ms}-0", event), event)

    rules = LivenessRules(stall_after=60, abandon_after=30)
    now = 1_000_000
    assert rules.verdict(state("running", 45, now - 59_999), now) is None
    stalled = rules.verdict(state("cancel_requested", 45, now - 60_000), now)
    assert stalled is not None
    assert (stalled.status, stalled.error) == ("stalled", "no report for 60 s")
    done = rules.verdict(state("running", 100, now - 60_000), now)
    assert done is not None
    assert (done.status, done.metadata) == ("completed", {"inferred": True})
    assert rules.verdict(state("stalled", 45, now - 29_999), now) is None
    failed = rules.verdict(state("stalled", 45, now - 30_000), now)
    assert failed is not None
    assert (failed.status, failed.error) == ("failed", "worker stopped reporting")
    assert rules.verdict(state("completed", 100, 0), now) is None
    never = LivenessRules(stall_after=60, infer_completion=False)
    assert never.verdict(state("stalled", 45, 0), now) is None
    quiet = never.verdict(state("running", 100, 0), now)
    assert quiet is not None
    assert quiet.status == "stalled"
    assert LivenessRules(stall_after=600).interval == 5.0


async def test_a_decision_read_back_midway_through_a_check_is_not_taken_again(
    redis_url: str,
) -> None:
    settings = Settings(redis_url=redis_url, stall_after=STALL_AFTER)
    first, second = build_relay(settings), build_relay(settings)
    try:
        old = now_ms() - 10_000
        with store_client(redis_url) as client:
            for n, session in enumerate(("a", "b")):
                fields = {"session_id": session, "step": "s", "progress": "5"}
                client.xadd(STREAM, fields, id=f"{old + n}-0")
            entries = client.xrange(STREAM)
        for gateway in (first, second):
            for envelope, found in decode("map", entries, gateway.view):
                gateway.view.apply(envelope, found)
        assert await second.liveness.check() == 2
        with store_client(redis_url) as client:
            stalls = {
                found.session_id: (envelope, found)
                for envelope, found in decode(
                    "map", client.xrange(STREAM, min=f"({old + 1}-0"), first.view
                )
            }
        decide = first.store.decide

        async def reader_reads_the_other_stall_meanwhile(**kwargs: Any) -> str | None:
            if len(stalls) == 2:  # while the first decision is written
                other = "b" if kwargs["event"].session_id == "a" else "a"
                first.view.apply(*stalls.pop(other))
            return await decide(**kwargs)

        first.store.decide = reader_reads_the_other_stall_meanwhile  # type: ignore[method-assign]
        assert await first.liveness.check() == 0
        assert statuses(redis_url, "a") == ["running", "stalled"]
        assert statuses(redis_url, "b") == ["running", "stalled"]
    finally:
        for gateway in (first, second):
            await gateway.connections.aclose()

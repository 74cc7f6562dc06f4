"""Faults with real processes: killed gateways, restarted or replaced Redis, stalled sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from relay.client.reporters import AsyncReporter
from relay.client.retry import RetryPolicy
from relay.protocol.entries import now_ms
from tests.conftest import RedisServer
from tests.helpers import (
    Gateway,
    StalledClient,
    event,
    eventually,
    receive,
    receive_events,
    start_watch,
    state_when,
    subscribe,
    until,
)

# Every test here runs on a single Redis and on a Redis Cluster.
pytestmark = pytest.mark.stores


async def follow(
    http: aiohttp.ClientSession,
    gateway: Gateway,
    received: list[str],
    stop: asyncio.Event,
    **subscription: Any,
) -> list[bool]:
    """A client that reconnects and resumes from its last id until ``stop``; notes ``recovered``."""
    recoveries: list[bool] = []
    while not stop.is_set():
        try:
            async with http.ws_connect(gateway.ws_url) as ws:
                since = {"since": received[-1]} if received else {}
                answer = await subscribe(ws, **subscription, **since)
                if since:
                    recoveries.append(answer["recovered"])
                while not stop.is_set():
                    item = await receive(ws, timeout=60)
                    if "event" in item:
                        received.append(item["id"])
        except (aiohttp.ClientError, OSError, AssertionError, TimeoutError):
            pass
        await asyncio.sleep(0.05)
    return recoveries


@pytest.mark.slow
async def test_killed_gateway_clients_resume_with_nothing_lost(
    start_gateway: Callable[..., Gateway],
    redis_url: str,
    http: aiohttp.ClientSession,
) -> None:
    killed, other = start_gateway(redis_url), start_gateway(redis_url)
    on_killed: list[str] = []
    on_other: list[str] = []
    stop = asyncio.Event()
    followers = [
        asyncio.create_task(follow(http, killed, on_killed, stop, workflow_type="map")),
        asyncio.create_task(follow(http, other, on_other, stop, workflow_type="map")),
    ]
    await eventually(lambda: killed.process is not None)
    published: list[str] = []
    async with AsyncReporter(redis_url) as reporter:
        await reporter.report("warm", "map", "warmup", 0)
        await eventually(lambda: len(on_killed) == 1 and len(on_other) == 1)
        for n in range(1500):
            published.append(await reporter.report(f"s{n % 7}", "map", "step", n % 100))
            if n == 500:
                await eventually(lambda: len(on_killed) > 100)
                killed.stop(kill=True)
            if n == 900:
                await asyncio.to_thread(killed.start)
    await eventually(lambda: len(on_killed) == len(on_other) == len(published) + 1, timeout=30)
    stop.set()
    await killed_stop_followers(followers, killed, other)
    assert on_killed[1:] == published  # everything, once, in order, across the restart
    assert on_other[1:] == published


async def killed_stop_followers(
    followers: list[asyncio.Task[list[bool]]], *gateways: Gateway
) -> None:
    for gateway in gateways:
        gateway.stop()  # closes the sockets, so the followers see stop and end
    for recoveries in await asyncio.gather(*followers):
        assert all(recoveries), recoveries


async def test_redis_restart_is_survived_without_loss_or_repeat(
    start_gateway: Callable[..., Gateway], own_redis: RedisServer, http: aiohttp.ClientSession
) -> None:
    own_redis.stop()
    own_redis.start(appendonly=True)
    gateway = start_gateway(own_redis.url)
    async with http.ws_connect(gateway.ws_url) as ws:
        await subscribe(ws, workflow_type="map")
        published: list[str] = []
        async with AsyncReporter(own_redis.url, retry=RetryPolicy(retry_for=20)) as reporter:
            for n in range(100):
                published.append(await reporter.report("s1", "map", "before", n))
            own_redis.stop()
            async with http.get(f"{gateway.url}/readyz") as response:
                assert response.status == 503
                assert "Retry-After" in response.headers
            restart = asyncio.create_task(asyncio.to_thread(own_redis.start, appendonly=True))
            for n in range(100):  # these wait in the reporter's retry until Redis is back
                published.append(await reporter.report("s1", "map", "after", n))
            await restart
        frames = await receive_events(ws, len(published), timeout=30)
        assert [f["id"] for f in frames] == published
    async with http.get(f"{gateway.url}/readyz") as response:
        assert response.status == 200


async def test_redis_replaced_by_an_empty_one(
    start_gateway: Callable[..., Gateway], own_redis: RedisServer, http: aiohttp.ClientSession
) -> None:
    gateway = start_gateway(own_redis.url)
    async with http.ws_connect(gateway.ws_url) as ws:
        await subscribe(ws, workflow_type="map")
        async with http.post(f"{gateway.url}/api/workflows/progress", json=event()) as response:
            before = (await response.json())["id"]
        await receive_events(ws, 1)
        own_redis.stop()
        own_redis.start()  # no persistence: a new, empty Redis
        # A worker on the new Redis writes ids below where the gateway was:
        # not news to anyone, but the subscriber is told to refetch.
        with own_redis.client() as raw:
            low = raw.xadd(
                "workflow:progress:map",
                {"session_id": "s2", "step": "a", "progress": "1", "ts": str(now_ms())},
                id="1000-0",
            )
        frame = await receive(ws, timeout=15)
        assert frame["type"] == "reset"
        state = await state_when(http, gateway.url, "s2", last_event_id=low)
        assert state["progress"] == 1
    assert "lost or rewrote its history" in gateway.logs()
    async with http.ws_connect(gateway.ws_url) as ws:
        answer = await subscribe(ws, workflow_type="map", since=before)
        assert answer["recovered"] is False  # the old history is gone: refetch


async def test_stalled_socket_beside_healthy_ones(
    start_gateway: Callable[..., Gateway], redis_url: str, http: aiohttp.ClientSession
) -> None:
    gateway = start_gateway(redis_url, RELAY_OUTBOX_LIMIT="200", RELAY_READ_COUNT="50")
    stalled = StalledClient(gateway.port, "/ws?workflow_type=map")
    try:
        async with http.ws_connect(gateway.ws_url) as healthy:
            await subscribe(healthy, workflow_type="map")
            sessions = [f"job{n}" for n in range(20)]
            published: list[str] = []
            terminal: dict[str, str] = {}
            # the healthy client reads all along, as a live page would
            reading = asyncio.create_task(receive_events(healthy, 20 * 151, timeout=60))
            # padded so the backlog outgrows every kernel and transport buffer
            padding = {"pad": "x" * 4000}
            async with AsyncReporter(redis_url) as reporter:
                for round_ in range(150):
                    for session in sessions:
                        published.append(
                            await reporter.report(session, "map", "work", round_ % 100, padding)
                        )
                for session in sessions:
                    entry = await reporter.report(session, "map", "done", 100, status="completed")
                    published.append(entry)
                    terminal[session] = entry
            frames = await reading
            assert [f["id"] for f in frames] == published  # the healthy one lost nothing
        frames, close_code = await asyncio.to_thread(
            stalled.read_frames,
            lambda got: set(terminal.values()) <= {f.get("id") for f in got},
        )
        assert close_code is None
        events = [f for f in frames if "event" in f]
        ids = [f["id"] for f in events]
        assert len(ids) < len(published)  # it was conflated...
        assert set(terminal.values()) <= set(ids)  # ...but every terminal event arrived
        assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
        last_per_session = {f["data"]["session_id"]: f["id"] for f in events}
        assert last_per_session == terminal  # and each session ends on its newest state
        async with http.get(f"{gateway.url}/metrics") as response:
            assert "relay_events_conflated_total" in await response.text()
    finally:
        stalled.close()
    state = await state_when(http, gateway.url, "job0", status="completed")
    assert state["last_event_id"] == terminal["job0"]


async def test_socket_that_accepts_nothing_is_closed_after_the_send_timeout(
    start_gateway: Callable[..., Gateway], redis_url: str, http: aiohttp.ClientSession
) -> None:
    gateway = start_gateway(redis_url, RELAY_SEND_TIMEOUT="1")
    stalled = StalledClient(gateway.port, "/ws?workflow_type=map")
    try:
        async with http.ws_connect(gateway.ws_url) as healthy:
            await subscribe(healthy, workflow_type="map")
            padding = {"pad": "x" * 12_000}
            published = []
            async with AsyncReporter(redis_url) as reporter:
                # about 7 MB: more than the kernel (up to 4 MB) and transport buffers hold
                for n in range(600):
                    published.append(await reporter.report("s1", "map", "work", n % 100, padding))
            frames = await receive_events(healthy, len(published), timeout=30)
            assert [f["id"] for f in frames] == published

        await eventually(lambda: "accepted nothing" in gateway.logs(), what="the send timeout")
    finally:
        stalled.close()

    async def counted() -> bool:
        async with http.get(f"{gateway.url}/metrics") as response:
            return "relay_slow_consumers_closed_total 1.0" in await response.text()

    await until(counted, what="the closed slow consumer counted")


async def test_relay_watch_reconnects_and_resumes_after_a_gateway_kill(
    start_gateway: Callable[..., Gateway], redis_url: str
) -> None:
    gateway = start_gateway(redis_url)
    watcher = await start_watch(gateway, "--type", "map", "--json")
    assert watcher.stdout is not None
    try:
        published: list[str] = []
        async with AsyncReporter(redis_url) as reporter:
            # report until the watcher shows one: its subscription is then in place
            line = b""
            while not line:
                # A new step each time: a repeated report is a heartbeat, routed to nobody.
                step = f"warmup-{len(published)}"
                published.append(await reporter.report("s1", "map", step, 0))
                with contextlib.suppress(TimeoutError):
                    line = await asyncio.wait_for(watcher.stdout.readline(), 0.2)
            seen = [json.loads(line)["id"]]
            await asyncio.to_thread(gateway.stop, kill=True)
            for n in range(3):  # published while the gateway is down
                published.append(await reporter.report("s1", "map", "offline", n))
            await asyncio.to_thread(gateway.start)
            published.append(await reporter.report("s1", "map", "back", 50))
        while seen[-1] != published[-1]:
            line = await asyncio.wait_for(watcher.stdout.readline(), 20)
            seen.append(json.loads(line)["id"])
        assert seen == published[published.index(seen[0]) :]
    finally:
        watcher.terminate()
        await watcher.wait()

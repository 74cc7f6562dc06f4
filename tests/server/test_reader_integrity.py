"""The reader against what workers may leave in Redis, and readiness that tells the truth.

Bytes that are not UTF-8, keys that are no streams, bugs in the reader itself,
a store that refuses writes, and the cost of following many streams.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import aiohttp
import pytest
import redis

from relay.server.reader import StreamReader
from relay.server.settings import Settings
from tests.conftest import RedisServer
from tests.helpers import (
    Fields,
    Gateway,
    event,
    eventually,
    receive_events,
    serving,
    subscribe,
    until,
)
from tests.readers import following
from tests.server.test_metrics import samples

FAST = {"RELAY_DISCOVERY_INTERVAL": "0.1", "RELAY_READ_BLOCK_MS": "100"}
ENTRY: Fields = {b"session_id": b"s1", b"step": b"analyzing", b"progress": b"5"}


async def metric(http: aiohttp.ClientSession, base: str, name: str) -> float:
    async with http.get(f"{base}/metrics") as response:
        return samples(await response.text())[(name, ())]


async def ready(http: aiohttp.ClientSession, base: str) -> tuple[int, Any]:
    async with http.get(f"{base}/readyz") as response:
        return response.status, await response.json()


async def session_event_ids(http: aiohttp.ClientSession, base: str, session_id: str) -> list[str]:
    async with http.get(f"{base}/api/workflows/sessions/{session_id}/events") as response:
        assert response.status == 200
        return [item["id"] for item in await response.json()]


async def test_bytes_that_are_not_utf8_cost_only_their_entry(
    start_gateway: Callable[..., Gateway],
    redis_url: str,
    redis_server: RedisServer,
    http: aiohttp.ClientSession,
) -> None:
    gateway = start_gateway(redis_url, **FAST)
    raw = redis.Redis(port=redis_server.port)  # bytes in, bytes out
    stream = b"workflow:progress:map"
    async with http.ws_connect(gateway.ws_url) as ws:
        await subscribe(ws, workflow_type="*")
        before = cast(bytes, raw.xadd(stream, ENTRY)).decode()
        raw.xadd(stream, {**ENTRY, b"note": b"caf\xe9"})  # a bad byte in a value
        raw.xadd(stream, {**ENTRY, b"n\xffte": b"x"})  # and in a field name
        raw.xadd(b"workflow:progress:caf\xe9", ENTRY)  # and in a stream key
        raw.sadd(b"workflow:types", b"t\xe9")
        # Moved on: a repeat of the first would be a heartbeat, routed to nobody.
        after = cast(bytes, raw.xadd(stream, {**ENTRY, b"progress": b"6"})).decode()
        assert [f["id"] for f in await receive_events(ws, 2)] == [before, after]
        # A type created later is still found, so discovery went on past the bad key.
        added = raw.xadd(b"workflow:progress:later", {**ENTRY, b"session_id": b"s2"})
        later = cast(bytes, added).decode()
        assert [f["id"] for f in await receive_events(ws, 1)] == [later]
    raw.close()
    assert await ready(http, gateway.url) == (200, {"status": "ready", "embedded": False})
    assert await metric(http, gateway.url, "relay_reader_ready") == 1
    assert await metric(http, gateway.url, "relay_invalid_entries_total") == 2
    assert await session_event_ids(http, gateway.url, "s1") == [before, after]
    # A gateway started now reads the same history at start and becomes ready.
    second = start_gateway(redis_url, **FAST)
    assert await session_event_ids(http, second.url, "s1") == [before, after]
    assert await metric(http, second.url, "relay_invalid_entries_total") == 2
    assert await metric(http, second.url, "relay_ignored_keys_total") == 2
    logs = gateway.logs()
    assert "Traceback" not in logs
    assert logs.count("ignoring key 'workflow:progress:caf\\udce9'") == 1


async def test_the_embedded_store_skips_bad_bytes_too() -> None:
    async with following(Settings()) as found:
        commands = found.relay.connections.commands
        stream = found.relay.keys.stream("map")
        fields: Fields = {"session_id": "s1", "step": "a", "progress": "5"}
        good = await commands.xadd(stream, fields)
        # Written as the byte 0xE9: the client escapes it back on the way in.
        await commands.xadd(stream, {**fields, "note": "caf\udce9"})
        last = await commands.xadd(stream, {**fields, "progress": "6"})
        await eventually(lambda: found.events() == [good, last])
        assert found.relay.ingest.invalid == 1


async def test_a_type_registered_for_a_key_that_is_no_stream_is_skipped(
    start_gateway: Callable[..., Gateway],
    redis_url: str,
    redis_server: RedisServer,
    http: aiohttp.ClientSession,
) -> None:
    with redis_server.client() as client:
        client.sadd("workflow:types", "clash")
        client.set("workflow:progress:clash", "not a stream")
    gateway = start_gateway(redis_url, **FAST)
    async with http.ws_connect(gateway.ws_url) as ws:
        await subscribe(ws, workflow_type="*")
        async with http.post(f"{gateway.url}/api/workflows/progress", json=event()) as response:
            published = (await response.json())["id"]
        assert [f["id"] for f in await receive_events(ws, 1)] == [published]
        with redis_server.client() as client:
            raw = client.xadd(
                "workflow:progress:raw", {"session_id": "r", "step": "a", "progress": "1"}
            )
        assert [f["id"] for f in await receive_events(ws, 1)] == [raw]
    assert await metric(http, gateway.url, "relay_ignored_keys_total") == 1
    assert await metric(http, gateway.url, "relay_redis_errors_total") == 0
    assert gateway.logs().count("ignoring key 'workflow:progress:clash'") == 1


async def test_a_followed_stream_replaced_by_another_type_is_dropped(redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, read_block_ms=100, discovery_interval=0.1)
    async with following(settings) as found:
        commands = found.relay.connections.commands
        fields: Fields = {"session_id": "s1", "step": "a", "progress": "5"}
        doomed = found.relay.keys.stream("doomed")
        first = await commands.xadd(doomed, fields)
        await eventually(lambda: found.events() == [first])
        await commands.delete(doomed)
        await commands.set(doomed, "now a string")  # XREAD answers WRONGTYPE for it
        kept = await commands.xadd(found.relay.keys.stream("kept"), fields)
        await eventually(lambda: found.events() == [first, kept])
        assert doomed not in found.relay.reader.positions
        assert found.relay.reader.ignored_keys == 1


@pytest.fixture
def flaky_reader(monkeypatch: pytest.MonkeyPatch) -> dict[str, BaseException | None]:
    """Make every reader's loop raise the given exception while one is set."""
    failure: dict[str, BaseException | None] = {"raise": None}
    original = StreamReader._read_once

    async def read_once(self: StreamReader) -> None:
        error = failure["raise"]
        if error is not None:
            await asyncio.sleep(0.01)
            raise error
        await original(self)

    monkeypatch.setattr(StreamReader, "_read_once", read_once)
    return failure


async def delivers(http: aiohttp.ClientSession, base: str) -> None:
    async with http.ws_connect(f"{base}/ws") as ws:
        await subscribe(ws, workflow_type="map")
        async with http.post(f"{base}/api/workflows/progress", json=event()) as response:
            published = (await response.json())["id"]
        assert [f["id"] for f in await receive_events(ws, 1)] == [published]


@pytest.mark.parametrize(
    ("failure", "problem", "restarted"),
    [
        (RuntimeError("a bug"), "stream reader is not following the streams", False),
        # Ends the task outright, past any except Exception.
        (asyncio.CancelledError(), "stream reader stopped; starting it again", True),
    ],
    ids=["reader-survives", "task-ends"],
)
async def test_readiness_follows_the_reader_through_failures(
    flaky_reader: dict[str, BaseException | None],
    failure: BaseException,
    problem: str,
    restarted: bool,
    redis_url: str,
    http: aiohttp.ClientSession,
) -> None:
    settings = Settings(redis_url=redis_url, read_block_ms=100)
    async with serving(settings) as base:
        assert (await ready(http, base))[0] == 200
        flaky_reader["raise"] = failure
        found: list[Any] = []

        async def not_ready() -> bool:
            found[:] = await ready(http, base)
            return found[0] == 503 and problem in found[1]["problems"]

        await until(not_ready, what=f"readyz to say {problem!r}")
        assert await metric(http, base, "relay_reader_ready") == 0
        restarts = await metric(http, base, "relay_reader_restarts_total")
        failures = await metric(http, base, "relay_reader_failures_total")
        assert (restarts >= 1, failures >= 1) == (restarted, not restarted)
        flaky_reader["raise"] = None

        async def is_ready() -> bool:
            return (await ready(http, base))[0] == 200

        await until(is_ready, what="the reader to recover")
        await delivers(http, base)


async def test_readiness_fails_while_the_store_refuses_writes(
    own_redis: RedisServer, http: aiohttp.ClientSession
) -> None:
    settings = Settings(redis_url=own_redis.url, read_block_ms=100)
    async with serving(settings) as base:
        assert (await ready(http, base))[0] == 200
        with own_redis.client() as client:
            client.config_set("maxmemory-policy", "noeviction")
            client.config_set("maxmemory", 1)  # below what Redis uses: every write is refused
        try:
            async with http.post(f"{base}/api/workflows/progress", json=event()) as response:
                assert response.status == 503
            status, body = await ready(http, base)
            assert status == 503
            assert [p for p in body["problems"] if p.startswith("store refuses writes:")]
            assert "maxmemory" in body["problems"][0]
        finally:
            with own_redis.client() as client:
                client.config_set("maxmemory", 0)
        assert (await ready(http, base))[0] == 200


async def idle_commands_per_tick(server: RedisServer, streams: int) -> float:
    """Redis commands per discovery tick of an idle reader following ``streams`` streams."""
    with server.client() as client:
        client.flushall()
        with client.pipeline(transaction=False) as pipe:
            for n in range(streams):
                pipe.xadd(
                    f"workflow:progress:t{n}", {"session_id": "s", "step": "a", "progress": "1"}
                )
            pipe.execute()
    settings = Settings(redis_url=server.url, read_block_ms=50, discovery_interval=0.05)
    async with following(settings) as found:
        reader = found.relay.reader
        # Past start: the history is read, and the first ticks have passed.
        await eventually(lambda: reader.caught_up and reader.ticks >= 5)
        with server.client() as client:
            client.config_resetstat()
            first = reader.ticks
            await eventually(lambda: reader.ticks >= first + 20, timeout=30)
            ticks = reader.ticks - first
            stats: dict[str, Any] = client.info("commandstats")
    assert len(reader.positions) == streams
    calls = sum(
        int(stat["calls"]) for name, stat in stats.items() if not name.startswith("cmdstat_config")
    )
    return calls / ticks


@pytest.mark.slow
async def test_idle_cost_does_not_grow_with_the_number_of_streams(own_redis: RedisServer) -> None:
    few = await idle_commands_per_tick(own_redis, 20)
    many = await idle_commands_per_tick(own_redis, 2_000)
    # A tick is a run id check and one SCAN step; between ticks, one XREAD or two.
    assert few <= 5
    assert many <= few + 1

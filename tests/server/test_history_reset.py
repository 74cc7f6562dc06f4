"""A Redis that lost or rewrote history: nothing is replayed as news, subscribers are told.

Real redis-server processes rolled back to an older snapshot or restarted
empty, real gateways, real WebSocket and SSE subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import aiohttp
import orjson
import redis
from aiohttp import web
from aiohttp.test_utils import TestServer

from relay.client.subscriber import Reset, Update, watch
from relay.protocol.keys import Keys
from relay.protocol.stream_ids import START, StreamId
from relay.server.settings import Settings
from relay.server.stream_checks import StreamChecks
from tests.conftest import RedisServer
from tests.helpers import Fields, Gateway, event, eventually, receive, subscribe, until
from tests.readers import following

FAST = {"RELAY_DISCOVERY_INTERVAL": "0.1", "RELAY_READ_BLOCK_MS": "100"}
STREAM = "workflow:progress:map"


async def publish(http: aiohttp.ClientSession, base: str, events: list[Any]) -> list[str]:
    """Publish a batch, retrying while the gateway cannot reach Redis."""
    ids: list[str] = []

    async def attempt() -> bool:
        async with http.post(f"{base}/api/workflows/progress/batch", json=events) as response:
            if response.status != 202:
                return False
            ids.extend((await response.json())["ids"])
            return True

    await until(attempt, timeout=20, what="a publish to succeed")
    return ids


@contextlib.asynccontextmanager
async def recording(ws: aiohttp.ClientWebSocketResponse) -> AsyncIterator[list[Any]]:
    """Every frame the socket receives, appended as it arrives."""
    frames: list[Any] = []

    async def record() -> None:
        while True:
            frames.append(await receive(ws, timeout=120))

    task = asyncio.create_task(record())
    try:
        yield frames
    finally:
        task.cancel()
        await asyncio.wait([task])


def event_ids(frames: list[Any]) -> list[str]:
    return [frame["id"] for frame in frames if "event" in frame]


def resets(frames: list[Any]) -> list[Any]:
    return [frame for frame in frames if frame.get("type") == "reset"]


def stream_key(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


async def session(http: aiohttp.ClientSession, base: str, session_id: str) -> Any:
    async with http.get(f"{base}/api/workflows/sessions/{session_id}") as response:
        return await response.json() if response.status == 200 else None


async def test_a_redis_rolled_back_to_an_older_snapshot_replays_nothing(
    own_redis: RedisServer,
    start_gateway: Callable[..., Gateway],
    http: aiohttp.ClientSession,
) -> None:
    gateways = [start_gateway(own_redis.url, **FAST) for _ in range(2)]
    async with (
        http.ws_connect(gateways[0].ws_url) as by_type,
        http.ws_connect(gateways[1].ws_url) as by_any,
    ):
        await subscribe(by_type, workflow_type="map")
        await subscribe(by_any, workflow_type="*")
        async with recording(by_type) as on_type, recording(by_any) as on_any:
            kept = await publish(
                http, gateways[0].url, [event(f"s{n % 10}", progress=n) for n in range(100)]
            )
            with own_redis.client() as client:
                client.save()
            lost = await publish(
                http, gateways[0].url, [event(f"late{n % 5}", progress=n) for n in range(50)]
            )
            await eventually(lambda: len(event_ids(on_type)) == len(event_ids(on_any)) == 150)
            own_redis.stop(kill=True)
            own_redis.start()  # from the snapshot: the first 100 entries
            with own_redis.client() as client:
                assert client.xlen(STREAM) == 100
            await eventually(lambda: resets(on_type) and resets(on_any), timeout=20)
            fresh = await publish(
                http, gateways[1].url, [event(f"new{n}", progress=n) for n in range(10)]
            )
            await eventually(lambda: len(event_ids(on_type)) == len(event_ids(on_any)) == 160)
    for frames in (on_type, on_any):
        ids = event_ids(frames)
        assert ids == kept + lost + fresh  # no duplicate, nothing out of order
        (reset,) = resets(frames)
        assert event_ids(frames[: frames.index(reset)]) == kept + lost
    with own_redis.client() as client:
        epoch = client.get("{workflow:progress:map}:epoch")
    assert resets(on_type) == resets(on_any)
    assert resets(on_type)[0] == {
        "type": "reset",
        "workflow_type": "map",
        "epoch": epoch,
        "message": "history was reset; refetch state",
    }
    for gateway in gateways:
        # Rebuilt from what Redis retains: the lost sessions are gone, the rest as retained.
        assert await session(http, gateway.url, "late0") is None
        state = await session(http, gateway.url, "s9")
        assert state["last_event_id"] == kept[-1]
        assert (await session(http, gateway.url, "new3"))["last_event_id"] == fresh[3]


async def test_a_redis_restarted_empty_tells_websocket_and_sse_subscribers(
    own_redis: RedisServer,
    start_gateway: Callable[..., Gateway],
    http: aiohttp.ClientSession,
) -> None:
    gateway = start_gateway(own_redis.url, **FAST)
    sse_lines: list[str] = []

    async def read_sse() -> None:
        url = f"{gateway.url}/api/workflows/events?workflow_type=map"
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=None)) as response:
            async for line in response.content:
                sse_lines.append(line.decode().rstrip("\n"))

    sse = asyncio.create_task(read_sse())
    try:
        async with http.ws_connect(gateway.ws_url) as ws:
            await subscribe(ws, workflow_type="map", session_id="s1")
            async with recording(ws) as frames:
                before = await publish(
                    http, gateway.url, [event("s1", progress=n) for n in range(20)]
                )
                await eventually(lambda: event_ids(frames) == before)
                await eventually(lambda: f"id: {before[-1]}" in sse_lines)
                own_redis.stop(kill=True)
                own_redis.start()  # nothing kept
                await eventually(lambda: resets(frames), timeout=20)
                after = await publish(
                    http, gateway.url, [event("s1", progress=n) for n in range(5)]
                )
                await eventually(lambda: event_ids(frames) == before + after)
        await eventually(lambda: "event: reset" in sse_lines)
        await eventually(lambda: f"id: {after[-1]}" in sse_lines)
    finally:
        sse.cancel()
        await asyncio.wait([sse])
    reset_at = sse_lines.index("event: reset")
    assert sse_lines[reset_at + 1].startswith('data: {"type":"reset","workflow_type":"map"')
    sse_ids = [line[4:] for line in sse_lines if line.startswith("id: ")]
    assert sse_ids == before + after
    state = await session(http, gateway.url, "s1")
    assert state["last_event_id"] == after[-1]
    assert state["started_at"] > stream_key(before[-1])[0]  # only what Redis retains


async def test_an_entry_rewritten_while_the_reader_was_away_is_noticed(redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, read_block_ms=50, discovery_interval=0.05)
    async with following(settings, supervised=False) as found:
        commands = found.relay.connections.commands

        def fields(n: int) -> Fields:
            return {"session_id": f"s{n}", "step": "a", "progress": str(n)}

        read = [await commands.xadd(STREAM, fields(n)) for n in range(6)]
        await eventually(lambda: found.events() == read)
        assert found.task is not None
        found.task.cancel()
        await asyncio.wait([found.task])
        # What a rollback to a snapshot after the third entry leaves once
        # publishers carried on: the ids are past ours, the epoch is the same.
        retained = cast("list[tuple[str, Fields]]", await commands.xrange(STREAM, max=read[2]))
        await commands.delete(STREAM)
        for entry_id, entry in retained:
            await commands.xadd(STREAM, entry, id=entry_id)
        new = [await commands.xadd(STREAM, fields(n)) for n in (7, 8)]
        found.task = asyncio.create_task(found.relay.reader.run())
        await eventually(lambda: found.events() == read + new)
        (reset,) = found.controls("reset")
        assert found.frames.index(reset) == len(read)
        view = found.relay.view
        assert view.get("s4") is None
        assert [view.get(f"s{n}") is not None for n in (0, 1, 2, 7, 8)] == [True] * 5
        assert found.relay.reader.resets == 1


async def test_a_redis_replaced_under_a_live_reader_is_noticed_by_its_run_id(
    redis_url: str,
) -> None:
    settings = Settings(redis_url=redis_url, read_block_ms=50, discovery_interval=0.05)
    async with following(settings) as found:
        commands, store = found.relay.connections.commands, found.relay.store
        reader = found.relay.reader

        def fields(n: int) -> Fields:
            return {"session_id": f"s{n}", "step": "a", "progress": str(n)}

        read = [await commands.xadd(STREAM, fields(n)) for n in range(6)]
        await eventually(lambda: found.events() == read)
        # Another Redis, restored from an older snapshot, that publishers
        # already wrote to. The client reconnects by itself, so the first the
        # reader sees of it is an XREAD answer; the run id check comes after.
        old_world = {START, *(StreamId.parse(str(entry_id)) for entry_id in read)}
        real_server_id = store.server_id

        async def server_id() -> str:
            if reader.positions.get(STREAM) in old_world:
                return await real_server_id()
            return "another run id"

        store.server_id = server_id  # type: ignore[method-assign]
        retained = cast("list[tuple[str, Fields]]", await commands.xrange(STREAM, max=read[2]))
        async with commands.pipeline(transaction=True) as pipe:
            pipe.delete(STREAM)
            for entry_id, entry in retained:
                pipe.xadd(STREAM, entry, id=entry_id)
            pipe.xadd(STREAM, fields(7))
            pipe.xadd(STREAM, fields(8))
            new = (await pipe.execute())[-2:]
        await eventually(lambda: found.controls("reset"))
        await eventually(lambda: reader.caught_up)
        assert found.events() == read + new
        view = found.relay.view
        assert view.get("s4") is None
        assert [view.get(f"s{n}") is not None for n in (0, 1, 2, 7, 8)] == [True] * 5


async def test_every_gateway_agrees_on_one_new_epoch(redis_url: str) -> None:
    clients = [redis.asyncio.Redis.from_url(redis_url, decode_responses=True) for _ in range(2)]
    epoch_key = "{workflow:progress:map}:epoch"
    try:
        one, other = (StreamChecks(client, Keys()) for client in clients)
        (first,) = (await one.ensure_epochs([STREAM])).values()
        assert await other.ensure_epochs([STREAM]) == {STREAM: first}
        (second,) = (await one.bump_epochs({STREAM: first})).values()
        assert second not in (None, first)
        assert await other.bump_epochs({STREAM: first}) == {STREAM: second}
        await clients[0].delete(epoch_key)  # lost with the data
        (third,) = (await other.bump_epochs({STREAM: second})).values()
        assert await one.bump_epochs({STREAM: second}) == {STREAM: third} != {STREAM: second}
        await clients[0].set(epoch_key, "caf\u00e9")  # not an epoch
        assert (await one.ensure_epochs([STREAM])) == {STREAM: None}
        (fourth,) = (await one.bump_epochs({STREAM: None})).values()
        assert fourth != third
        assert await clients[0].get(epoch_key) == fourth
    finally:
        for client in clients:
            await client.aclose()


async def test_the_python_subscriber_drops_its_resume_point_on_reset() -> None:
    subscribes: list[list[dict[str, Any]]] = []
    resets_seen: list[Reset] = []
    updates: list[Update] = []

    async def gateway(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        frames: list[dict[str, Any]] = []
        subscribes.append(frames)
        frames.append(orjson.loads((await ws.receive()).data))
        if len(subscribes) == 1:
            await ws.send_str('{"type":"subscribed","workflow_type":"map","session_id":null}')
            data = orjson.dumps(event(workflow_type="map")).decode()
            await ws.send_str(f'{{"event":"workflow:progress:map","id":"9-0","data":{data}}}')
            await ws.send_str('{"type":"reset","workflow_type":"map","epoch":"ab","message":"m"}')
            frames.append(orjson.loads((await ws.receive()).data))
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/ws", gateway)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()

    async def follow() -> None:
        subscription = watch(
            str(server.make_url("")),
            workflow_type="map",
            on_reset=resets_seen.append,
            snapshot=True,
        )
        async with contextlib.aclosing(subscription):
            async for update in subscription:
                updates.append(update)

    watching = asyncio.create_task(follow())
    try:
        await eventually(lambda: len(subscribes) == 2 and subscribes[1])
    finally:
        watching.cancel()
        await asyncio.wait([watching])
        await server.close()
    assert resets_seen == [Reset("map", "m")]
    assert [str(update.id) for update in updates] == ["9-0"]
    plain = {"action": "subscribe", "workflow_type": "map", "snapshot": True}
    # The state is asked for again at once, and a reconnect does not resume from 9-0.
    assert subscribes == [[plain, plain], [plain]]

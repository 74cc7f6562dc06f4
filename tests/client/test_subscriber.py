"""``relay.watch``, the Python subscriber, against real gateways and a private Redis."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestServer

from relay import AsyncReporter, ProgressEvent, TokenRefused, Update, watch
from relay.client.subscriber import Connection, frame_items, parse_update
from relay.protocol.stream_ids import StreamId
from relay.server.auth import mint_token
from tests.helpers import Gateway, event, eventually

SECRET = "a-secret-long-enough-for-hs256-signing"
TIMEOUT = 20.0


class Following:
    """A subscription iterated in a task: what it yielded, and what its connection did."""

    def __init__(self, url: str, **options: Any) -> None:
        self.updates: list[Update] = []
        self.states: list[Connection] = []
        self._subscription = watch(url, on_state=self.states.append, **options)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async with contextlib.aclosing(self._subscription):
            async for update in self._subscription:
                self.updates.append(update)

    def lives(self) -> int:
        """How many times the gateway confirmed the subscription."""
        return sum(change.state == "live" for change in self.states)

    async def live(self, times: int = 1) -> None:
        """Wait until the subscription was confirmed ``times`` times."""
        await eventually(lambda: self.lives() >= times, timeout=TIMEOUT, what="a live subscription")

    async def count(self, wanted: int) -> list[Update]:
        """Wait until ``wanted`` updates arrived; fail on the first error of the task."""
        await eventually(
            lambda: len(self.updates) >= wanted or self._task.done(),
            timeout=TIMEOUT,
            what=f"{wanted} updates",
        )
        if self._task.done():
            self._task.result()
        return self.updates

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.wait([self._task])


@contextlib.asynccontextmanager
async def following(url: str, **options: Any) -> AsyncIterator[Following]:
    follower = Following(url, **options)
    try:
        yield follower
    finally:
        await follower.stop()


async def report(redis_url: str, *progresses: float, session_id: str = "s1") -> list[str]:
    """Publish ``map`` events straight to Redis, one per progress figure; their ids."""
    async with AsyncReporter(redis_url) as reporter:
        return [
            await reporter.report(session_id, "map", f"step {progress}", progress)
            for progress in progresses
        ]


async def test_events_arrive_in_order_with_their_ids(
    start_gateway: Callable[..., Gateway], redis_url: str
) -> None:
    gateway = start_gateway(redis_url)
    async with following(gateway.url, workflow_type="map") as follower:
        await follower.live()
        ids = await report(redis_url, 10, 20, 30.5, 100)
        updates = await follower.count(4)
    assert [str(update.id) for update in updates] == ids
    assert [update.event.progress for update in updates] == [10, 20, 30.5, 100]
    assert all(isinstance(update.event, ProgressEvent) for update in updates)
    assert {update.event.session_id for update in updates} == {"s1"}


async def test_resumes_after_the_gateway_restarts_without_loss_or_repeats(
    start_gateway: Callable[..., Gateway], redis_url: str
) -> None:
    gateway = start_gateway(redis_url)
    async with following(gateway.url, workflow_type="map") as follower:
        await follower.live()
        before = await report(redis_url, 1, 2, 3)
        await follower.count(3)
        gateway.stop()
        await eventually(
            lambda: any(change.state == "disconnected" for change in follower.states),
            timeout=TIMEOUT,
            what="the subscriber to notice",
        )
        # Published while no gateway runs: only the resume can deliver them.
        during = await report(redis_url, 4, 5, 6)
        gateway.start()
        await follower.live(times=2)
        after = await report(redis_url, 7)
        updates = await follower.count(7)
    assert [str(update.id) for update in updates] == before + during + after
    assert [update.event.progress for update in updates] == [1, 2, 3, 4, 5, 6, 7]


async def test_every_type_with_snapshot_repeats_nothing_after_a_reconnect(
    start_gateway: Callable[..., Gateway], redis_url: str
) -> None:
    gateway = start_gateway(redis_url)
    async with following(gateway.url, snapshot=True) as follower:
        await follower.live()
        seen = await report(redis_url, 10, 20)
        await follower.count(2)
        gateway.stop()
        gateway.start()
        # The snapshot on reconnect holds s1's latest event again, already yielded.
        await follower.live(times=2)
        seen += await report(redis_url, 30)
        updates = await follower.count(3)
    assert [str(update.id) for update in updates] == seen


async def test_a_session_subscription_sees_that_session_only(
    start_gateway: Callable[..., Gateway], redis_url: str
) -> None:
    gateway = start_gateway(redis_url)
    async with following(gateway.url, workflow_type="map", session_id="wanted") as follower:
        await follower.live()
        await report(redis_url, 10, session_id="other")
        wanted = await report(redis_url, 20, session_id="wanted")
        await report(redis_url, 30, session_id="other")
        # The last event of the run, so nothing of the other session can be on its way.
        wanted += await report(redis_url, 40, session_id="wanted")
        updates = await follower.count(2)
    assert [str(update.id) for update in updates] == wanted
    assert {update.event.session_id for update in updates} == {"wanted"}


@pytest.mark.parametrize(
    ("token", "expired"),
    [
        (None, False),
        ("not-a-token", False),
        (mint_token(SECRET, "old", workflow_types=["*"], ttl_seconds=-60), True),
    ],
    ids=["none", "forged", "expired"],
)
async def test_a_refused_token_ends_the_loop_with_token_refused(
    start_gateway: Callable[..., Gateway], redis_url: str, token: str | None, expired: bool
) -> None:
    gateway = start_gateway(redis_url, RELAY_TOKEN_SECRET=SECRET)
    async with contextlib.aclosing(watch(gateway.url, workflow_type="map", token=token)) as updates:
        with pytest.raises(TokenRefused) as refused:
            await asyncio.wait_for(anext(updates), TIMEOUT)
    assert refused.value.expired is expired


async def test_get_token_is_asked_again_after_an_expired_token(
    start_gateway: Callable[..., Gateway], redis_url: str
) -> None:
    gateway = start_gateway(redis_url, RELAY_TOKEN_SECRET=SECRET)
    tokens = [
        mint_token(SECRET, "w", workflow_types=["map"], ttl_seconds=-60),
        mint_token(SECRET, "w", workflow_types=["map"]),
    ]
    asked: list[str] = []

    async def get_token() -> str:
        asked.append(tokens[len(asked)])
        return asked[-1]

    async with following(gateway.url, workflow_type="map", get_token=get_token) as follower:
        await follower.live()
        ids = await report(redis_url, 50)
        updates = await follower.count(1)
    assert asked == tokens
    assert [str(update.id) for update in updates] == ids


async def test_get_token_that_keeps_giving_expired_tokens_ends_with_token_refused(
    start_gateway: Callable[..., Gateway], redis_url: str
) -> None:
    gateway = start_gateway(redis_url, RELAY_TOKEN_SECRET=SECRET)
    calls: list[int] = []

    def get_token() -> str:
        calls.append(1)
        return mint_token(SECRET, "w", workflow_types=["map"], ttl_seconds=-60)

    subscription = watch(gateway.url, workflow_type="map", get_token=get_token)
    async with contextlib.aclosing(subscription):
        with pytest.raises(TokenRefused) as refused:
            await asyncio.wait_for(anext(subscription), TIMEOUT)
    assert refused.value.expired
    assert len(calls) == 2  # the first token, and one fresh one before giving up


async def test_an_invalid_entry_does_not_end_the_subscription(
    start_gateway: Callable[..., Gateway], redis_url: str
) -> None:
    gateway = start_gateway(redis_url)
    async with following(gateway.url, workflow_type="map") as follower:
        await follower.live()
        with redis.Redis.from_url(redis_url) as client:
            client.xadd("workflow:progress:map", {"session_id": "s1", "progress": "lots"})
        ids = await report(redis_url, 60)
        updates = await follower.count(1)
    assert [str(update.id) for update in updates] == ids


def test_the_parser_skips_what_is_not_a_valid_event(caplog: pytest.LogCaptureFixture) -> None:
    good = {"event": "workflow:progress:map", "id": "5-1", "data": event(progress=12)}
    bad_id = {**good, "id": "five"}
    bad_data = {**good, "data": {**event(), "progress": 250}}
    message = orjson.dumps([good, {"type": "pong"}, 7, bad_id, bad_data]).decode()
    caplog.set_level(logging.DEBUG, logger="relay.client.subscriber")
    items = list(frame_items(message))
    assert len(items) == 4  # the objects; 7 is none
    parsed = [parse_update(item) for item in items if "event" in item]
    expected = Update(StreamId(5, 1), ProgressEvent.model_validate(good["data"]))
    assert parsed == [expected, None, None]
    assert list(frame_items("{not json")) == []
    assert len([r for r in caplog.records if r.levelno == logging.DEBUG]) == 3


async def test_events_after_a_bad_frame_still_arrive() -> None:
    good = {"event": "workflow:progress:map", "id": "7-0", "data": event(progress=70)}

    async def gateway(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()
        await ws.send_str('{"type":"subscribed","workflow_type":"map","session_id":null}')
        await ws.send_str("{not json")
        await ws.send_str(orjson.dumps({**good, "id": "6-0", "data": {"progress": 1}}).decode())
        await ws.send_str(orjson.dumps(good).decode())
        await ws.receive()
        return ws

    async def refuses(request: web.Request) -> web.Response:
        return web.Response(status=401)

    app = web.Application()
    app.router.add_get("/ws", gateway)
    app.router.add_get("/private/ws", refuses)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    try:
        async with following(base, workflow_type="map") as follower:
            updates = await follower.count(1)
        assert [str(update.id) for update in updates] == ["7-0"]
        subscription = watch(f"{base}/private")
        async with contextlib.aclosing(subscription):
            with pytest.raises(TokenRefused) as refused:
                await asyncio.wait_for(anext(subscription), TIMEOUT)
        assert not refused.value.expired
    finally:
        await server.close()

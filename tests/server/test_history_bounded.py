"""A session's history costs what the session holds, never a scan of its type's stream."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import redis

from relay.protocol.entries import now_ms
from relay.protocol.event import ProgressEvent
from relay.protocol.frames import Envelope
from relay.protocol.stream_ids import StreamId
from relay.server.recent_ids import RecentIds
from relay.server.session_view import SessionView
from relay.server.settings import Settings
from tests.conftest import RedisServer
from tests.helpers import serving, state_when

OTHER_ENTRIES = 50_000
KEPT = 5


def test_recent_ids_keep_the_latest_in_order() -> None:
    ids = RecentIds(3)
    for ms in range(1, 8):
        ids.add(StreamId(ms, 0))
    assert list(ids) == [StreamId(5, 0), StreamId(6, 0), StreamId(7, 0)]
    assert all(isinstance(found, StreamId) for found in ids)
    ids.add(StreamId(7, 0))  # the newest again, with the ring wrapped: ignored
    assert list(ids.after(StreamId(5, 0))) == [StreamId(6, 0), StreamId(7, 0)]
    assert list(ids.after(None)) == list(ids)


def test_recent_ids_ignore_a_repeat_and_restart_on_a_rewritten_stream() -> None:
    ids = RecentIds(4)
    for ms in [1, 2, 3, 2, 3]:
        ids.add(StreamId(ms, 0))
    assert list(ids) == [StreamId(1, 0), StreamId(2, 0), StreamId(3, 0)]
    ids.add(StreamId(1, 5))  # older, never seen: the stream was written anew
    assert list(ids) == [StreamId(1, 5)]


def _event(session_id: str, workflow_type: str = "map", **fields: Any) -> ProgressEvent:
    values = {"step": "s", "progress": 1, "ts": 1, **fields}
    return ProgressEvent(session_id=session_id, workflow_type=workflow_type, **values)


def test_the_view_keeps_a_bounded_history_per_session_in_its_latest_type() -> None:
    view = SessionView(ttl_ms=10**15, max_sessions=10, history_limit=2, clock=lambda: 2)
    for ms, (session, wtype) in enumerate([("a", "map"), ("b", "map"), ("a", "map")] * 2):
        # Each a step of its own: a repeated event would be a heartbeat, kept out of history.
        moved = _event(session, wtype, step=f"s{ms}")
        view.apply(Envelope.of(f"{ms + 1}-0", moved), moved)
    state = view.get("a")
    assert state is not None
    assert list(state.history) == [StreamId(4, 0), StreamId(6, 0)]
    view.apply(Envelope.of("9-0", _event("a", "character")), _event("a", "character"))
    assert list(state.history) == [StreamId(9, 0)]
    ended = _event("a", "character", status="completed")
    view.apply(Envelope.of("10-0", ended), ended)
    late = _event("a", "character")
    view.apply(Envelope.of("11-0", late), late)  # ignored by the state, still in its history
    assert list(state.history) == [StreamId(10, 0), StreamId(11, 0)]
    assert state.status == "completed"


@pytest.fixture
def crowded_stream(redis_server: RedisServer, redis_url: str) -> list[str]:
    """A map stream of many sessions' entries; answers the ids of session "mine"'s 8 entries."""
    mine: list[str] = []
    # Recent ids: an entry's time comes from its id, and old sessions are forgotten.
    start = now_ms() - OTHER_ENTRIES
    with redis_server.client() as client, client.pipeline(transaction=False) as pipe:
        for n in range(OTHER_ENTRIES):
            fields = {"session_id": f"other-{n % 500}", "step": "s", "progress": "1"}
            pipe.xadd("workflow:progress:map", fields, id=f"{start + n}-0")
            if n % 6_000 == 0:
                fields = {"session_id": "mine", "step": f"step-{len(mine)}", "progress": "2"}
                pipe.xadd("workflow:progress:map", fields, id=f"{start + n}-1")
                mine.append(f"{start + n}-1")
        pipe.execute()
    assert len(mine) == 9
    return mine


@pytest.fixture
def slowlog(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """Redis logs every command it runs, with its arguments, while the test lasts."""
    with redis_server.client() as client:
        before = client.config_get("slowlog-*")
        client.config_set("slowlog-max-len", 100_000)
        client.config_set("slowlog-log-slower-than", 0)
        client.slowlog_reset()
        yield client
        for name, value in before.items():
            client.config_set(name, value)
        client.slowlog_reset()


def xranges(client: redis.Redis) -> list[list[str]]:
    logged = client.slowlog_get(100_000)
    commands = [bytes(entry["command"]).decode().split() for entry in logged]
    return [command for command in commands if command[0].upper() == "XRANGE"]


async def test_history_reads_only_the_sessions_own_entries(
    redis_url: str,
    crowded_stream: list[str],
    slowlog: redis.Redis,
    http: aiohttp.ClientSession,
) -> None:
    settings = Settings(redis_url=redis_url, session_history=KEPT, read_count=1_000)
    async with serving(settings) as base:
        await state_when(http, base, "mine", step="step-8")
        slowlog.slowlog_reset()
        url = f"{base}/api/workflows/sessions/mine/events"
        async with http.get(url) as response:
            assert response.status == 200
            frames = await response.json()
        asked = xranges(slowlog)
        async with http.get(url, params={"since": crowded_stream[-3], "limit": "1"}) as response:
            paged = await response.json()
    kept = crowded_stream[-KEPT:]
    assert [frame["id"] for frame in frames] == kept
    assert [frame["data"]["step"] for frame in frames] == [f"step-{n}" for n in range(4, 9)]
    assert all(frame["data"]["session_id"] == "mine" for frame in frames)
    assert [frame["id"] for frame in paged] == [crowded_stream[-2]]
    # One single-id XRANGE per event served, nothing that spans the stream.
    assert sorted(command[2] for command in asked) == sorted(kept)
    assert all(command[2] == command[3] for command in asked), asked


async def test_an_entry_gone_from_the_stream_is_left_out(
    redis_url: str, redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    async with serving(Settings(redis_url=redis_url)) as base:
        with redis_server.client() as client:
            first = client.xadd(
                "workflow:progress:map", {"session_id": "s", "step": "a", "progress": "1"}
            )
            second = client.xadd(
                "workflow:progress:map", {"session_id": "s", "step": "b", "progress": "2"}
            )
            await state_when(http, base, "s", step="b")
            client.xdel("workflow:progress:map", first)
        async with http.get(f"{base}/api/workflows/sessions/s/events") as response:
            frames = await response.json()
    assert [frame["id"] for frame in frames] == [second]

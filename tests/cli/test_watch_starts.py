"""``relay watch``: the board learns when the sessions it joined midway started.

A session's first event on the board is its start only when it came after
the gateway's list of running sessions, on the same live connection; the
sessions of that list take their ``started_at`` from it.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from typing import get_args

import aiohttp
import orjson
import pytest

from relay.cli.watch import BAR_STYLES, STATUS_STYLES, ProgressBoard, SessionStart, running_starts
from relay.client.subscriber import Connection
from relay.protocol.event import Status
from relay.server.auth import mint_token
from tests.cli.test_watch import SECRET, Clock, Output, post, rendered, reported
from tests.helpers import Gateway, start_watch

T0 = 1_700_000_000_000


def times(board: ProgressBoard) -> dict[str, str]:
    """The time column by session id: the words between the percentage and the status."""
    shown = {}
    for line in rendered(board).splitlines()[2:]:
        words = line.split()
        percent = next(i for i, word in enumerate(words) if word.endswith("%"))
        shown[words[1]] = " ".join(words[percent + 2 : -1])
    return shown


def live_board() -> tuple[Clock, ProgressBoard]:
    clock = Clock()
    board = ProgressBoard(clock=clock)
    board.set_connection(Connection("connecting"))
    board.set_connection(Connection("live"))
    return clock, board


def test_a_session_joined_midway_takes_its_start_from_the_answer() -> None:
    clock, board = live_board()
    # The snapshot, ahead of the answer: 50% at 30 s says nothing of the rate yet.
    board.update(reported("old", 50, ts=T0 + 30_000))
    assert board.remaining(board.get("old")) is None  # type: ignore[arg-type]
    board.learn_starts({"old": SessionStart(started_at=T0, first_progress=0)})
    # 50% in 30 s from its real start: 30 s left, counted down since the event.
    assert board.remaining(board.get("old")) == pytest.approx(30)  # type: ignore[arg-type]
    clock.now += 10
    assert times(board)["old"] == "20s"
    board.update(reported("old", 100, status="completed", ts=T0 + 65_000))
    assert times(board)["old"] == "took 1m05s"


def test_the_answer_is_kept_for_sessions_whose_first_event_comes_later() -> None:
    _, board = live_board()
    board.learn_starts({"later": SessionStart(started_at=T0, first_progress=10)})
    board.update(reported("later", 70, ts=T0 + 12_000))
    # 60% more in 12 s: 30% left is 6 s.
    assert board.remaining(board.get("later")) == pytest.approx(6)  # type: ignore[arg-type]
    board.update(reported("later", 80, status="cancelled", ts=T0 + 14_000))
    assert times(board)["later"] == "took 14s"


def test_a_session_unnamed_by_the_answer_is_seen_from_its_start_once_answered() -> None:
    _, board = live_board()
    board.update(reported("snap", 40, ts=T0))  # before the answer, unnamed: it may have ended
    board.learn_starts({})
    board.update(reported("new", 20, ts=T0 + 1_000))
    board.update(reported("new", 100, status="completed", ts=T0 + 9_000))
    board.update(reported("snap", 100, status="completed", ts=T0 + 9_000))
    shown = times(board)
    assert shown["new"] == "took 8s"
    assert shown["snap"] == ""


def test_without_an_answer_only_a_first_event_at_zero_is_a_start() -> None:
    clock = Clock()
    board = ProgressBoard(clock=clock)
    board.update(reported("before", 30, ts=T0))  # not live yet
    board.set_connection(Connection("live"))
    board.update(reported("zero", 0, ts=T0))  # live, but the answer never came
    board.update(reported("mid", 25, ts=T0))
    for session in ("before", "zero", "mid"):
        board.update(reported(session, 100, status="completed", ts=T0 + 5_000))
    assert times(board) == {"before": "", "zero": "took 5s", "mid": ""}


def test_a_lost_connection_ends_the_sight_of_starts_until_the_next_answer() -> None:
    _, board = live_board()
    board.learn_starts({})
    board.set_connection(Connection("error", message="bad frame"))  # still connected
    board.update(reported("kept", 30, ts=T0))
    board.set_connection(Connection("disconnected", retry_in=0.2))
    board.set_connection(Connection("connecting"))
    board.set_connection(Connection("live"))
    board.update(reported("resumed", 30, ts=T0))  # may be a replay or snapshot of a later event
    board.learn_starts({"kept": SessionStart(started_at=T0 - 1_000, first_progress=0)})
    board.update(reported("fresh", 30, ts=T0))
    for session in ("kept", "resumed", "fresh"):
        board.update(reported(session, 100, status="completed", ts=T0 + 3_000))
    assert times(board) == {"kept": "took 4s", "resumed": "", "fresh": "took 3s"}


def test_an_answer_while_not_live_names_starts_but_sees_no_others() -> None:
    clock = Clock()
    board = ProgressBoard(clock=clock)
    board.learn_starts({"named": SessionStart(started_at=T0, first_progress=0)})
    board.update(reported("named", 100, status="completed", ts=T0 + 2_000))
    board.update(reported("other", 100, status="completed", ts=T0 + 2_000))
    assert times(board) == {"named": "took 2s", "other": ""}


async def test_running_starts_raise_on_a_refusal(
    start_gateway: Callable[..., Gateway], redis_url: str, http: aiohttp.ClientSession
) -> None:
    gateway = start_gateway(redis_url, RELAY_TOKEN_SECRET=SECRET)
    with pytest.raises(aiohttp.ClientResponseError) as refused:
        await running_starts(http, gateway.url, "map", token="not-a-token")
    assert refused.value.status == 401


async def test_running_starts_name_every_session_not_ended_whatever_its_status(
    start_gateway: Callable[..., Gateway], redis_url: str, http: aiohttp.ClientSession
) -> None:
    gateway = start_gateway(redis_url)
    start = int(time.time() * 1000) - 60_000
    for status in get_args(Status):
        await post(http, gateway, session_id=status, progress=10, status=status, ts=start)
    starts = await running_starts(http, gateway.url, "map")
    assert set(starts) == {"running", "retrying", "cancel_requested", "stalled"}
    assert starts["stalled"] == SessionStart(started_at=start, first_progress=10)


def test_every_status_has_its_styles() -> None:
    assert set(STATUS_STYLES) == set(BAR_STYLES) == set(get_args(Status))


async def test_watch_bars_says_took_from_the_real_start_of_a_session_it_joined_midway(
    start_gateway: Callable[..., Gateway], redis_url: str, http: aiohttp.ClientSession
) -> None:
    gateway = start_gateway(redis_url, RELAY_TOKEN_SECRET=SECRET)
    token = mint_token(SECRET, "ops", workflow_types=["map"], ttl_seconds=600)
    start = int(time.time() * 1000) - 60_000
    # Started a minute before the board, and already past 0% when the board joins.
    await post(http, gateway, session_id="joined", progress=10, ts=start)
    await post(http, gateway, session_id="joined", progress=40, ts=start + 20_000)
    watcher = await start_watch(gateway, "--type", "map", "--bars", "--token", token)
    assert watcher.stdout is not None
    output = Output(watcher.stdout)
    try:
        await output.wait_for("live", "joined", "40%")
        await post(
            http, gateway, session_id="joined", progress=100, status="completed", ts=start + 42_000
        )
        await output.wait_for("took 42s")
        # The gateway has answered: a session starting now is seen from its first event.
        await post(http, gateway, session_id="fresh", progress=20, ts=start + 50_000)
        await post(
            http, gateway, session_id="fresh", progress=100, status="completed", ts=start + 57_000
        )
        await output.wait_for("took 7s")
    finally:
        watcher.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(watcher.wait(), 15)
        await output.finish()
    assert code == 0
    # --json gives the event as it was published, nothing added: a session subscription
    # starts with the session's latest event.
    lines = await start_watch(
        gateway, "--type", "map", "--session", "joined", "--json", "--token", token
    )
    assert lines.stdout is not None
    try:
        frame = orjson.loads(await asyncio.wait_for(lines.stdout.readline(), 15))
    finally:
        lines.send_signal(signal.SIGTERM)
        await asyncio.wait_for(lines.wait(), 15)
    assert set(frame) == {"event", "id", "data"}
    data = frame["data"]
    assert (data["session_id"], data["status"], data["ts"]) == (
        "joined",
        "completed",
        start + 42_000,
    )
    assert "started_at" not in data

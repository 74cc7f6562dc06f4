"""``relay watch``: the progress board, and the command's live bars and plain lines end to end."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from rich.console import Console

from relay.cli.main import main
from relay.cli.watch import (
    ProgressBoard,
    choose_mode,
    format_eta,
    format_event,
    format_percent,
)
from relay.client.subscriber import Connection
from relay.protocol.event import ProgressEvent
from relay.protocol.plans import PlanPosition
from relay.server.auth import mint_token, read_token
from tests.helpers import Gateway, event, first_watch_line, start_watch

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def reported(session_id: str, progress: float, **fields: Any) -> ProgressEvent:
    data = {
        "session_id": session_id,
        "workflow_type": "map",
        "step": "analyzing",
        "progress": progress,
        "status": "running",
        "metadata": {},
        "ts": 1_700_000_000_000,
    }
    data.update(fields)
    return ProgressEvent.model_validate(data)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def rendered(board: ProgressBoard, width: int = 120, height: int = 40) -> str:
    console = Console(
        file=io.StringIO(), width=width, height=height, color_system=None, record=True
    )
    console.print(board)
    return console.export_text()


def by_id(text: str) -> dict[str, str]:
    """The board's lines by session id, the first word of a line without the type column."""
    return {line.split()[0]: line for line in text.splitlines()[2:] if line.split()}


def test_board_rows_statuses_and_percentages() -> None:
    board = ProgressBoard(clock=Clock())
    board.update(reported("m-1", 40, step="rendering tiles"))
    board.update(reported("m-1", 100, step="rendering tiles", status="completed"))
    board.update(reported("c-2", 30, workflow_type="character", step="portrait"))
    board.update(reported("c-2", 30, workflow_type="character", status="failed", error="OOM: gpu"))
    board.update(reported("e-3", 45.5, workflow_type="encounter", status="cancel_requested"))
    board.update(reported("e-4", 12, workflow_type="encounter", status="cancelled"))
    board.set_connection(Connection("live"))
    text = rendered(board)
    lines = {line.split()[1]: line for line in text.splitlines()[2:] if line.split()}
    assert "100%" in lines["m-1"]
    assert "completed" in lines["m-1"]
    assert "rendering tiles" in lines["m-1"]
    assert "character" in lines["c-2"]
    assert "failed: OOM: gpu" in lines["c-2"]
    assert "45.5%" in lines["e-3"]
    assert "cancel_requested" in lines["e-3"]
    assert "cancelled" in lines["e-4"]
    assert text.startswith("live  1 running · 1 completed · 1 failed · 1 cancelled")


def scene(clock: Clock, board: ProgressBoard) -> None:
    """Ten running sessions and ten ended ones, one event each second."""
    for n in range(20):
        session = f"sess-{n:02d}"
        board.update(reported(session, 0, ts=1_700_000_000_000 + n * 1000))
        clock.now += 1
        if n % 2:
            board.update(reported(session, 40 + n, metadata={"estimated_time_remaining": 90}))
        elif n % 4:
            board.update(
                reported(
                    session,
                    30,
                    status="failed",
                    ts=1_700_000_005_000 + n * 1000,
                    error="GPU out of memory\nTraceback (most recent call last):\n  x",
                )
            )
        else:
            board.update(
                reported(session, 100, status="completed", ts=1_700_000_065_000 + n * 1000)
            )
    board.set_connection(Connection("live"))


def test_board_shows_running_sessions_first_most_recent_on_top() -> None:
    clock = Clock()
    board = ProgressBoard(clock=clock)
    scene(clock, board)
    order = [row.session_id for row in board.rows()]
    running = [f"sess-{n:02d}" for n in range(19, 0, -2)]
    assert order[:10] == running
    assert order[10:] == [f"sess-{n:02d}" for n in range(18, -1, -2)]
    clock.now += 1
    board.update(reported("sess-01", 60))
    assert [row.session_id for row in board.rows()][:2] == ["sess-01", "sess-19"]


def test_board_ended_sessions_leave_after_the_linger() -> None:
    clock = Clock()
    board = ProgressBoard(clock=clock, linger=60)
    scene(clock, board)  # sess-NN ended at 101 + NN on the board's clock, now 120
    clock.now += 40
    assert len(board.rows()) == 20
    clock.now += 10
    ended = [row.session_id for row in board.rows() if row.ended]
    assert ended == ["sess-18", "sess-16", "sess-14", "sess-12", "sess-10"]
    clock.now += 60
    assert all(not row.ended for row in board.rows())
    assert board.counts() == {"running": 10, "completed": 0, "failed": 0, "cancelled": 0}


def board_text(width: int, height: int) -> list[str]:
    clock = Clock()
    board = ProgressBoard(clock=clock, title="map @ http://127.0.0.1:9999")
    scene(clock, board)
    return rendered(board, width=width, height=height).splitlines()


@pytest.mark.parametrize("width", [80, 60, 40])
def test_board_fits_the_width_with_id_bar_percent_and_status_on_one_line(width: int) -> None:
    lines = board_text(width, 24)
    assert len(lines) == 22  # the header, the headings and 20 rows: no line wrapped
    assert max(len(line) for line in lines) == width
    header = "live  10 running · 5 completed · 5 failed · 0 cancelled  map @ http://127.0.0.1:9999"
    assert lines[0] == header if len(header) <= width else lines[0] == header[: width - 1] + "…"
    rows = {line.split()[1 if width > 40 else 0]: line for line in lines[2:]}
    assert len(rows) == 20
    running = rows["sess-05"]
    assert "━━" in running
    assert "45%" in running
    assert running.rstrip().endswith("running")
    failed = rows["sess-02"]
    assert "30%" in failed
    assert "failed" in failed
    assert "Traceback" not in failed
    assert "…" in failed  # the error is cut at the end of the line
    done = rows["sess-00"]
    assert "100%" in done
    assert "complete" in done
    assert "eta" not in done
    assert " 0s" not in done


def test_board_times_say_took_for_ended_sessions_and_time_left_for_running_ones() -> None:
    rows = {line.split()[1]: line for line in board_text(100, 40)[2:]}
    assert "took 1m05s" in rows["sess-00"]  # completed, seen from 0%
    assert "took 5s" in rows["sess-02"]  # failed 5 s after it started
    assert re.search(r" 1m\d\ds running", rows["sess-05"])  # 90 s left, counted down since
    clock = Clock()
    board = ProgressBoard(clock=clock)
    board.update(reported("late", 100, status="completed"))  # its start was not seen
    board.update(reported("overdue", 50, metadata={"estimated_time_remaining": 1}))
    clock.now += 5
    lines = {line.split()[1]: line for line in rendered(board).splitlines()[2:]}
    assert "took" not in lines["late"]
    assert not re.search(r"\d+s", lines["late"] + lines["overdue"])


def test_board_fits_the_height_running_sessions_first_and_counts_the_rest() -> None:
    lines = board_text(80, 10)
    assert len(lines) == 10
    assert lines[0].startswith("live  10 running")
    ids = [line.split()[1] for line in lines[2:9]]
    assert ids == ["sess-19", "sess-17", "sess-15", "sess-13", "sess-11", "sess-09", "sess-07"]
    assert lines[9] == "… 13 more (3 running)"
    assert len(board_text(80, 13)) == 13
    tiny = board_text(80, 1)
    assert len(tiny) == 1
    assert tiny[0].startswith("live")


def test_board_header_tells_the_connection_and_counts_down_a_retry() -> None:
    clock = Clock()
    board = ProgressBoard(clock=clock)
    assert rendered(board).startswith("connecting  0 running · 0 completed")
    board.set_connection(Connection("disconnected", retry_in=3.2))
    assert rendered(board).startswith("disconnected, retry in 4s  0 running")
    clock.now += 2
    assert rendered(board).startswith("disconnected, retry in 2s")
    board.set_connection(Connection("live"))
    assert rendered(board, width=40).startswith("live  0 running")


def test_board_columns_degrade_from_80_to_40() -> None:
    clock = Clock()
    board = ProgressBoard(clock=clock)
    scene(clock, board)
    headings = {
        width: rendered(board, width=width).splitlines()[1].split() for width in (80, 60, 40)
    }
    assert headings[80] == ["type", "session", "progress", "%", "step", "time", "status"]
    assert headings[60] == ["type", "session", "progress", "%", "time", "status"]
    assert headings[40] == ["session", "progress", "%", "status"]


def test_board_eta_from_metadata_counts_down_then_from_the_rate() -> None:
    clock = Clock()
    board = ProgressBoard(clock=clock)
    board.update(reported("s1", 20, metadata={"estimated_time_remaining": 30}))
    assert board.remaining(board.rows()[0]) == 30
    clock.now += 10
    assert board.remaining(board.rows()[0]) == 20
    assert " 20s " in rendered(board)
    clock.now += 60
    assert board.remaining(board.rows()[0]) == 0  # never negative

    # no figure from the worker: 10% to 30% in 10 s of event time is 2%/s, 70% left
    board.update(reported("s2", 10, ts=1_700_000_000_000))
    assert board.remaining(board.get("s2")) is None  # type: ignore[arg-type]
    board.update(reported("s2", 30, ts=1_700_000_010_000))
    assert board.remaining(board.get("s2")) == pytest.approx(35)  # type: ignore[arg-type]
    board.update(reported("s2", 100, status="completed"))
    assert board.remaining(board.get("s2")) == 0  # type: ignore[arg-type]
    board.update(reported("s3", 50, status="failed", error="x"))
    assert board.remaining(board.get("s3")) is None  # type: ignore[arg-type]


def test_board_eta_is_the_gateways() -> None:
    # A completed session has nothing left, even when its last event said otherwise,
    # and a failed one has no estimate: the rule of relay.protocol.progress.
    board = ProgressBoard(clock=Clock())
    board.update(reported("done", 10, ts=1_700_000_000_000))
    eta = {"estimated_time_remaining": 30}
    board.update(reported("done", 100, status="completed", metadata=eta))
    assert board.remaining(board.get("done")) == 0  # type: ignore[arg-type]
    board.update(reported("broke", 40, status="failed", metadata={"estimated_time_remaining": 5}))
    assert board.remaining(board.get("broke")) is None  # type: ignore[arg-type]


def test_board_keeps_at_most_max_rows_dropping_ended_sessions_first() -> None:
    clock = Clock()
    board = ProgressBoard(clock=clock, max_rows=3)
    for session, progress in [("done", 100), ("run-1", 10), ("run-2", 20), ("run-3", 30)]:
        clock.now += 1
        board.update(
            reported(session, progress, status="completed" if progress == 100 else "running")
        )
    assert [row.session_id for row in board.rows()] == ["run-3", "run-2", "run-1"]
    clock.now += 1
    board.update(reported("run-4", 40))
    assert [row.session_id for row in board.rows()] == ["run-4", "run-3", "run-2"]


def test_plain_lines_carry_an_error_on_their_one_line() -> None:
    told = reported("p-1", 30, status="failed", error="disk full\nTraceback:\n  line 3")
    line = format_event(told)
    assert "\n" not in line
    assert line.endswith("error: disk full Traceback: line 3")


def test_retries_say_their_attempt_and_error_on_the_board_and_plain_lines() -> None:
    board = ProgressBoard(clock=Clock())
    board.update(reported("r-1", 30))
    board.update(reported("r-1", 30, status="retrying", attempt=2, error="timed out\nagain"))
    board.set_connection(Connection("live"))
    text = rendered(board, width=160)
    assert "retrying (attempt 2): timed out again" in text
    assert text.startswith("live  1 running · 0 completed")
    board.update(reported("r-1", 40, attempt=2))
    assert "attempt" not in rendered(board)
    line = format_event(reported("r-1", 30, status="retrying", attempt=2, error="timed out"))
    assert line.endswith("retrying         analyzing  attempt 2  error: timed out")


def test_linger_flag_reaches_the_board(monkeypatch: pytest.MonkeyPatch) -> None:
    given: dict[str, Any] = {}

    async def fake_bars(*args: Any, **options: Any) -> int:
        given.update(options)
        return 0

    monkeypatch.setattr("relay.cli.watch.watch_bars", fake_bars)
    assert main(["watch", "--bars", "--linger", "5", "--url", "http://127.0.0.1:1"]) == 0
    assert given["linger"] == 5


def test_formats_and_mode_choice() -> None:
    assert format_percent(45) == "45%"
    assert format_percent(45.0) == "45%"
    assert format_percent(45.25) == "45.2%"
    assert format_eta(None) == ""
    assert format_eta(4.4) == "4s"
    assert format_eta(185) == "3m05s"
    assert format_eta(3720) == "1h02m"
    assert choose_mode(as_json=True, bars=False, is_terminal=True) == "json"
    assert choose_mode(as_json=False, bars=True, is_terminal=False) == "bars"
    assert choose_mode(as_json=False, bars=False, is_terminal=True) == "bars"
    assert choose_mode(as_json=False, bars=False, is_terminal=False) == "plain"


class Output:
    """Collects a subprocess's stdout as it comes."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.raw = b""
        self._task = asyncio.create_task(self._read(stream))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            self.raw += chunk

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw.decode(errors="replace"))

    async def wait_for(self, *wanted: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while not all(w in self.text for w in wanted):
            if time.monotonic() > deadline:
                missing = [w for w in wanted if w not in self.text]
                raise AssertionError(f"output lacks {missing}:\n{self.text[-3000:]}")
            await asyncio.sleep(0.05)

    async def finish(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._task, 5)


async def post(http: aiohttp.ClientSession, gateway: Gateway, **fields: Any) -> None:
    async with http.post(f"{gateway.url}/api/workflows/progress", json=event(**fields)) as resp:
        assert resp.status == 202, await resp.text()


async def test_watch_bars_draws_sessions_percentages_and_final_statuses(
    start_gateway: Callable[..., Gateway], redis_url: str, http: aiohttp.ClientSession
) -> None:
    gateway = start_gateway(redis_url)
    watcher = await start_watch(gateway, "--type", "map", "--bars")
    assert watcher.stdout is not None
    output = Output(watcher.stdout)
    try:
        await output.wait_for("live")  # the gateway confirmed the subscription
        await post(http, gateway, session_id="bar-done", step="texturing", progress=40)
        await post(
            http, gateway, session_id="bar-done", step="texturing", progress=100, status="completed"
        )
        await post(http, gateway, session_id="bar-fail", step="carving", progress=30)
        await post(
            http,
            gateway,
            session_id="bar-fail",
            step="carving",
            progress=30,
            status="failed",
            error="disk full",
        )
        await post(
            http,
            gateway,
            session_id="bar-run",
            step="placing towns",
            progress=45.5,
            metadata={"estimated_time_remaining": 90},
        )
        await output.wait_for(
            "bar-done",
            "100%",
            "completed",
            "bar-fail",
            "30%",
            "failed: disk full",
            "bar-run",
            "45.5%",
            "placing towns",
            "running",
        )
    finally:
        watcher.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(watcher.wait(), 15)
        await output.finish()
    assert code == 0
    assert output.raw.endswith(b"\x1b[?25h")  # the cursor is given back on the way out
    last_frame = output.text[output.text.rfind("map @ http") :]
    for wanted in ("bar-done", "completed", "failed: disk full", "45.5%"):
        assert wanted in last_frame


async def test_watch_without_a_terminal_prints_plain_lines(
    start_gateway: Callable[..., Gateway], redis_url: str, http: aiohttp.ClientSession
) -> None:
    gateway = start_gateway(redis_url)
    watcher = await start_watch(gateway, "--type", "map")
    assert watcher.stdout is not None
    try:
        line = await first_watch_line(
            watcher, lambda attempt: post(http, gateway, session_id="plain-1", progress=attempt)
        )
        await post(http, gateway, session_id="plain-1", progress=100, status="completed")
        while b"completed" not in line:
            line = await asyncio.wait_for(watcher.stdout.readline(), 10)
        text = line.decode()
        assert "\x1b" not in text  # no terminal codes in a pipe
        assert text.split() == ["map", "plain-1", "100%", "completed", "analyzing"]
    finally:
        watcher.terminate()
        await watcher.wait()


SECRET = "a-secret-long-enough-for-hs256-signing"


def run_watch(gateway: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    """``relay watch --json`` against ``gateway`` until it exits by itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    return subprocess.run(
        [sys.executable, "-m", "relay", "watch", "--url", gateway.url, "--json", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("token_args", "message"),
    [
        ((), "relay watch: authentication required (give --token or RELAY_TOKEN)"),
        (
            ("--token", "not-a-token"),
            "relay watch: authentication required (give --token or RELAY_TOKEN)",
        ),
        (
            ("--token", mint_token(SECRET, "old", workflow_types=["*"], ttl_seconds=-60)),
            "relay watch: token expired",
        ),
    ],
    ids=["none", "forged", "expired"],
)
def test_watch_stops_with_one_line_when_the_gateway_refuses_the_token(
    start_gateway: Callable[..., Gateway],
    redis_url: str,
    token_args: tuple[str, ...],
    message: str,
) -> None:
    gateway = start_gateway(redis_url, RELAY_TOKEN_SECRET=SECRET)
    done = run_watch(gateway, "--type", "map", *token_args)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [message]
    assert done.stdout == ""


def test_token_dashboard_prints_a_link_with_the_token_in_the_fragment(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["token", "--sub", "ops", "--type", "*", "--cancel", "--secret", SECRET]
    assert main([*args, "--dashboard", "--url", "http://relay.example:9000/"]) == 0
    link = capsys.readouterr().out.strip()
    base, token = link.split("#token=")
    assert base == "http://relay.example:9000/"
    grant = read_token(token, SECRET)
    assert grant.subject == "ops"
    assert grant.allows_cancel("map", "s1")


def test_token_owner_sessions_grants_the_subjects_own_sessions_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["token", "--sub", "alice", "--owner-sessions", "--secret", SECRET]) == 0
    grant = read_token(capsys.readouterr().out.strip(), SECRET)
    assert grant.allows("map", "s1", owner="alice")
    assert not grant.allows("map", "s1", owner="bob")
    assert not grant.allows("map", None)


PLAN_POSITION = PlanPosition(2, 3, 40.0)


def test_board_shows_a_plans_overall_figure_and_step_and_estimates_on_it() -> None:
    clock = Clock()
    board = ProgressBoard(clock=clock)
    board.update(reported("p-1", 0, step="analyzing"), PlanPosition(1, 3, 0.0))
    board.update(reported("p-1", 50, step="generating", ts=1_700_000_004_000), PLAN_POSITION)
    board.update(reported("plain", 30))
    board.set_connection(Connection("live"))
    lines = {line.split()[1]: line for line in rendered(board).splitlines()[2:] if line.split()}
    assert "40%" in lines["p-1"]
    assert "2/3 generating 50%" in lines["p-1"]
    assert "30%" in lines["plain"]
    assert "/" not in lines["plain"].split("30%")[1]
    row = board.get("p-1")
    assert row is not None
    assert row.eta == 6.0  # 40% of the whole in 4 s
    # A step the plan does not list keeps the overall figure.
    board.update(
        reported("p-1", 10, step="extra", ts=1_700_000_005_000), PlanPosition(None, 3, None)
    )
    assert (row.overall, row.step_index) == (40.0, None)
    assert "?/3 extra 10%" in rendered(board)


def test_plain_lines_say_the_step_of_the_plan_and_the_overall_figure() -> None:
    line = format_event(reported("p-1", 50, step="generating"), PLAN_POSITION)
    assert line.endswith("generating  step 2/3, overall 40%")


async def test_watch_prints_the_gateways_plan_figures(
    start_gateway: Callable[..., Gateway], redis_url: str, http: aiohttp.ClientSession
) -> None:
    gateway = start_gateway(redis_url)
    watcher = await start_watch(gateway, "--type", "map")
    assert watcher.stdout is not None
    plan = [{"step": "analyzing", "weight": 1}, {"step": "generating", "weight": 6}]
    try:
        await first_watch_line(
            watcher,
            lambda attempt: post(
                http, gateway, session_id="plan-1", step="analyzing", progress=attempt, plan=plan
            ),
        )
        await post(http, gateway, session_id="plan-1", step="generating", progress=50)
        line = await asyncio.wait_for(watcher.stdout.readline(), 10)
        while b"generating" not in line:
            line = await asyncio.wait_for(watcher.stdout.readline(), 10)
        # 1 of 7 done, and half of 6: 4 of 7.
        assert line.decode().split()[-4:] == ["step", "2/2,", "overall", "57.1%"]
    finally:
        watcher.terminate()
        await watcher.wait()

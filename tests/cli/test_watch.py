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
from relay.cli.watch import ProgressBoard, choose_mode, format_eta, format_percent
from relay.client.subscriber import Connection
from relay.protocol.event import ProgressEvent
from relay.server.auth import mint_token, read_token
from tests.helpers import Gateway, event, start_watch

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


def rendered(board: ProgressBoard, width: int = 120) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, record=True)
    console.print(board)
    return console.export_text()


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
    lines = {line.split()[1]: line for line in text.splitlines() if len(line.split()) > 1}
    assert "100%" in lines["m-1"]
    assert "completed" in lines["m-1"]
    assert "rendering tiles" in lines["m-1"]
    assert "character" in lines["c-2"]
    assert "failed: OOM: gpu" in lines["c-2"]
    assert "45.5%" in lines["e-3"]
    assert "cancel_requested" in lines["e-3"]
    assert "cancelled" in lines["e-4"]
    assert "live" in text
    assert "1 cancel_requested, 1 cancelled, 1 completed, 1 failed" in text
    # first seen first
    assert [row.session_id for row in board.rows()] == ["m-1", "c-2", "e-3", "e-4"]


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
    board = ProgressBoard(clock=Clock(), max_rows=3)
    board.update(reported("done", 100, status="completed"))
    board.update(reported("run-1", 10))
    board.update(reported("run-2", 20))
    board.update(reported("run-3", 30))
    assert [row.session_id for row in board.rows()] == ["run-1", "run-2", "run-3"]
    board.update(reported("run-4", 40))
    assert [row.session_id for row in board.rows()] == ["run-2", "run-3", "run-4"]


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
    last_frame = output.text[output.text.rfind("relay watch map") :]
    for wanted in ("bar-done", "completed", "failed: disk full", "45.5%"):
        assert wanted in last_frame


async def test_watch_without_a_terminal_prints_plain_lines(
    start_gateway: Callable[..., Gateway], redis_url: str, http: aiohttp.ClientSession
) -> None:
    gateway = start_gateway(redis_url)
    watcher = await start_watch(gateway, "--type", "map")
    assert watcher.stdout is not None
    try:
        # post until the watcher shows one: its subscription is then in place
        line = b""
        for attempt in range(100):
            await post(http, gateway, session_id="plain-1", progress=attempt)
            with contextlib.suppress(TimeoutError):
                line = await asyncio.wait_for(watcher.stdout.readline(), 0.2)
                break
        assert line
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

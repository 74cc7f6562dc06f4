"""``relay watch`` in a real terminal: tmux panes of 80x24 and 60x24."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator

import pytest

from relay.client.reporters import Reporter
from relay.protocol.event import Status
from tests.helpers import Gateway, wait_until

RUNNING = [f"term-{n:02d}" for n in range(18)]
ENDED_STATUSES: tuple[Status, ...] = ("completed", "failed", "cancelled")
ENDED = {f"term-{n:02d}": ENDED_STATUSES[n % 3] for n in range(18, 30)}


class Tmux:
    """A tmux server of its own, on a private socket."""

    def __init__(self) -> None:
        self.socket = f"relay-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def __call__(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, "-f", os.devnull, *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
        return done.stdout

    def pane(self) -> list[str]:
        """The lines on screen now."""
        return self("capture-pane", "-p", "-t", "watch").splitlines()


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    server = Tmux()
    yield server
    subprocess.run(
        ["tmux", "-L", server.socket, "kill-server"], capture_output=True, check=False, timeout=10
    )


def shows(tmux: Tmux, width: int, seen: list[list[str]]) -> Callable[[], bool]:
    """Whether the pane has the live header and every running session, within ``width``."""

    def check() -> bool:
        lines = tmux.pane()
        seen.append(lines)
        text = "\n".join(lines)
        return (
            bool(lines)
            and lines[0].startswith("live  18 running · 4 completed · 4 failed · 4 cancelled")
            and all(len(line) <= width for line in lines)
            and all(session in text for session in RUNNING)
        )

    return check


def test_watch_in_a_terminal_keeps_the_header_and_running_sessions_in_view(
    start_gateway: Callable[..., Gateway], redis_url: str, tmux: Tmux
) -> None:
    gateway = start_gateway(redis_url)
    # The shell tmux starts the command with exports the size it started at as COLUMNS
    # and LINES, which rich would take over the terminal's own size, even after a resize.
    command = ["env", "-u", "COLUMNS", "-u", "LINES", sys.executable, "-m", "relay", "watch"]
    command += ["--url", gateway.url, "--type", "terminal"]
    # The pane stays after the command exits, so a crash is there to read.
    tmux(
        "start-server",
        ";",
        "set-option",
        "-g",
        "remain-on-exit",
        "on",
        ";",
        "new-session",
        "-d",
        "-s",
        "watch",
        "-x",
        "80",
        "-y",
        "24",
        shlex.join(command),
    )
    seen: list[list[str]] = []

    def live() -> bool:
        seen.append(tmux.pane())
        return bool(seen[-1]) and seen[-1][0].startswith("live")

    wait_until(live, timeout=20, what="the live header")
    with Reporter(redis_url) as reporter:
        for session in RUNNING:
            reporter.report(
                session, "terminal", "placing towns", 40, {"estimated_time_remaining": 600}
            )
        for session, status in ENDED.items():
            reporter.report(session, "terminal", "placing towns", 0)
            reporter.report(
                session,
                "terminal",
                "placing towns",
                60,
                status=status,
                error="disk full\nTraceback (most recent call last)"
                if status == "failed"
                else None,
            )

    try:
        wait_until(shows(tmux, 80, seen), timeout=20, what="every running session at 80x24")
        at_80 = seen[-1]
        assert len(at_80) == 24
        assert at_80[-1] == "… 9 more (0 running)"
        print("\n".join(at_80))

        tmux("resize-window", "-t", "watch", "-x", "60", "-y", "24")
        wait_until(shows(tmux, 60, seen), timeout=20, what="every running session at 60x24")
        assert seen[-1][1].split() == ["type", "session", "progress", "%", "time", "status"]
        print("\n".join(seen[-1]))
    except AssertionError as failure:
        raise AssertionError("\n".join(seen[-1] if seen else [])) from failure

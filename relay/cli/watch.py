"""``relay watch``: follow events from a gateway in the terminal, reconnecting by itself.

Three views of the same subscription:

- live progress bars (:class:`ProgressBoard` drawn with rich), one row per
  session, the default on a terminal or with ``--bars``;
- one JSON event frame per line with ``--json``, for scripts;
- one plain line per event otherwise (stdout is a pipe or a file).

All three iterate :func:`relay.client.subscriber.watch`, which reconnects,
resumes and handles resets; a gateway that refuses the token ends them with
:class:`~relay.client.subscriber.TokenRefused`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Literal, TextIO

from rich.console import Console
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from relay.client.subscriber import Connection, Reset, Update, watch
from relay.protocol.event import TERMINAL_STATUSES, ProgressEvent, format_number
from relay.protocol.frames import encode_event_frame
from relay.protocol.progress import estimated_time_remaining

REFRESH_INTERVAL = 0.25
MAX_ROWS = 40
BAR_WIDTH = 24

Mode = Literal["bars", "json", "plain"]

STATUS_STYLES = {
    "running": "cyan",
    "completed": "bold green",
    "failed": "bold red",
    "cancelled": "grey50",
    "cancel_requested": "yellow",
}
BAR_STYLES = {
    "running": "cyan",
    "completed": "green",
    "failed": "red",
    "cancelled": "grey50",
    "cancel_requested": "yellow",
}


def format_event(event: ProgressEvent) -> str:
    """One readable line for an event."""
    line = (
        f"{event.workflow_type:<12} {event.session_id:<24} "
        f"{format_number(event.progress):>6}%  {event.status:<16} {event.step}"
    )
    if event.error:
        line += f"  error: {event.error}"
    return line


def format_percent(progress: float) -> str:
    """``45%`` for whole numbers, ``45.5%`` otherwise."""
    if float(progress).is_integer():
        return f"{int(progress)}%"
    return f"{progress:.1f}%"


def format_eta(seconds: float | None) -> str:
    """Seconds as ``42s``, ``3m05s`` or ``1h02m``; empty when unknown."""
    if seconds is None:
        return ""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


@dataclass(slots=True)
class SessionRow:
    """What the board knows of one session."""

    workflow_type: str
    session_id: str
    step: str
    progress: float
    status: str
    error: str | None
    first_ts: float
    first_progress: float
    eta: float | None
    """Seconds left when the latest event arrived."""
    seen_at: float
    """The board's clock when the latest event arrived."""

    @property
    def ended(self) -> bool:
        """Whether the session completed, failed or was cancelled."""
        return self.status in TERMINAL_STATUSES


class ProgressBoard:
    """The state of every session seen, rendered as a table of progress bars.

    Feed it event frames with :meth:`update`; rich calls :meth:`__rich__` to
    draw it. It does no I/O, so it can be driven and rendered in tests.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_rows: int = MAX_ROWS,
        title: str | None = None,
    ) -> None:
        self._clock = clock
        self._max_rows = max_rows
        self._rows: OrderedDict[str, SessionRow] = OrderedDict()
        self.title = title
        self.connection = "connecting"

    def get(self, session_id: str) -> SessionRow | None:
        """The row of one session, if shown."""
        return self._rows.get(session_id)

    def set_connection(self, change: Connection) -> None:
        """Show whether the subscription is live: ``connecting``, ``live``, ``disconnected``."""
        shown: str = change.state
        if change.message is not None:
            shown += f": {change.message}"
        if change.retry_in is not None:
            shown += f", retrying in {change.retry_in:.1f}s"
        self.connection = shown

    def forget_type(self, workflow_type: str) -> None:
        """Drop every row of ``workflow_type``: its history was reset, the rows may be wrong."""
        for key in [k for k, row in self._rows.items() if row.workflow_type == workflow_type]:
            del self._rows[key]

    def update(self, event: ProgressEvent) -> None:
        """Take one event as its session's latest."""
        now = self._clock()
        session_id = event.session_id
        progress = event.progress
        ts = float(event.ts or now * 1000)
        row = self._rows.get(session_id)
        if row is None:
            row = SessionRow(
                workflow_type=event.workflow_type,
                session_id=session_id,
                step=event.step,
                progress=progress,
                status=event.status,
                error=None,
                first_ts=ts,
                first_progress=progress,
                eta=None,
                seen_at=now,
            )
            self._rows[session_id] = row
            self._evict()
        row.workflow_type = event.workflow_type
        row.step = event.step
        row.progress = progress
        row.status = event.status
        row.error = event.error
        row.seen_at = now
        row.eta = estimated_time_remaining(
            status=row.status,
            progress=progress,
            metadata=event.metadata,
            first_progress=row.first_progress,
            started_at=row.first_ts,
            updated_at=ts,
        )

    def remaining(self, row: SessionRow) -> float | None:
        """Seconds left now: the estimate at the latest event, counted down since."""
        if row.eta is None or row.ended:
            return row.eta
        return max(row.eta - (self._clock() - row.seen_at), 0.0)

    def _evict(self) -> None:
        """Keep ``max_rows`` rows: the oldest ended sessions go first, then the oldest."""
        excess = len(self._rows) - self._max_rows
        if excess <= 0:
            return
        ended = [key for key, row in self._rows.items() if row.ended][:excess]
        for key in ended:
            del self._rows[key]
        while len(self._rows) > self._max_rows:
            self._rows.popitem(last=False)

    def rows(self) -> list[SessionRow]:
        """The rows, in the order their sessions were first seen."""
        return list(self._rows.values())

    def summary(self) -> str:
        """How many sessions are in each status."""
        counts: dict[str, int] = {}
        for row in self._rows.values():
            counts[row.status] = counts.get(row.status, 0) + 1
        return ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))

    def render(self) -> Table:
        """The board as a rich table."""
        rows = self.rows()
        caption = self.connection
        if rows:
            caption += f" · {self.summary()}"
        table = Table(
            title=self.title,
            caption=caption,
            caption_justify="left",
            expand=False,
            header_style="bold",
            box=None,
            pad_edge=False,
        )
        id_width = min(max((len(row.session_id) for row in rows), default=7), 48)
        type_width = min(max((len(row.workflow_type) for row in rows), default=4), 24)
        table.add_column("type", no_wrap=True, min_width=type_width)
        table.add_column("session", no_wrap=True, min_width=id_width)
        table.add_column("progress", no_wrap=True, width=BAR_WIDTH)
        table.add_column("%", justify="right", no_wrap=True, min_width=6)
        table.add_column("step", no_wrap=True, overflow="ellipsis", ratio=1)
        table.add_column("eta", justify="right", no_wrap=True, min_width=6)
        table.add_column("status", overflow="fold", ratio=1, min_width=16)
        for row in rows:
            style = STATUS_STYLES.get(row.status, "")
            bar_style = BAR_STYLES.get(row.status, "cyan")
            bar = ProgressBar(
                total=100,
                completed=row.progress,
                width=BAR_WIDTH,
                complete_style=bar_style,
                finished_style=bar_style,
            )
            status = row.status
            if row.status == "failed" and row.error:
                status += f": {row.error}"
            table.add_row(
                row.workflow_type,
                row.session_id,
                bar,
                format_percent(row.progress),
                row.step,
                format_eta(self.remaining(row)),
                Text(status, style=style),
            )
        return table

    def __rich__(self) -> Table:
        return self.render()


async def watch_events(
    gateway: str,
    workflow_type: str,
    session_id: str | None,
    *,
    as_json: bool = False,
    token: str | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Print every event of the subscription, one line each, resuming after each reconnect.

    Disconnections and resets are told on stderr, as ``#`` lines.
    """

    def disconnected(change: Connection) -> None:
        if change.state == "disconnected":
            note(f"disconnected, reconnecting in {change.retry_in:.1f}s")

    def reset(told: Reset) -> None:
        note(f"{told.workflow_type}: {told.message}")

    updates = watch(
        gateway,
        workflow_type=workflow_type,
        session_id=session_id,
        token=token,
        on_state=disconnected,
        on_reset=reset,
    )
    async with contextlib.aclosing(updates):
        async for update in updates:
            if as_json:
                line = encode_event_frame(str(update.id), update.event)
            else:
                line = format_event(update.event)
            print(line, file=out, flush=True)
    return 0


def note(message: str) -> None:
    """A ``#`` line on stderr, beside the events on stdout."""
    print(f"# {message}", file=sys.stderr, flush=True)


async def _show_on(board: ProgressBoard, updates: AsyncGenerator[Update, None]) -> None:
    async with contextlib.aclosing(updates):
        async for update in updates:
            board.update(update.event)


async def watch_bars(
    gateway: str,
    workflow_type: str,
    session_id: str | None,
    *,
    token: str | None = None,
    console: Console | None = None,
) -> int:
    """Show live progress bars of the subscription until interrupted (SIGINT or SIGTERM)."""
    target = workflow_type if session_id is None else f"{workflow_type} / {session_id}"
    board = ProgressBoard(title=f"relay watch {target} · {gateway}")
    console = console or Console(force_terminal=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    with Live(
        board,
        console=console,
        auto_refresh=False,
        redirect_stdout=False,
        redirect_stderr=False,
    ) as live:
        updates = watch(
            gateway,
            workflow_type=workflow_type,
            session_id=session_id,
            token=token,
            snapshot=True,
            on_state=board.set_connection,
            on_reset=lambda told: board.forget_type(told.workflow_type),
        )
        following = asyncio.create_task(_show_on(board, updates))
        stopping = asyncio.create_task(stop.wait())
        try:
            done: set[asyncio.Task[None] | asyncio.Task[bool]] = set()
            while not done:
                live.refresh()
                done, _ = await asyncio.wait(
                    [following, stopping],
                    timeout=REFRESH_INTERVAL,
                    return_when=asyncio.FIRST_COMPLETED,
                )
        finally:
            for task in (following, stopping):
                task.cancel()
            await asyncio.gather(following, stopping, return_exceptions=True)
            live.refresh()
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGTERM)
    if not following.cancelled() and (error := following.exception()) is not None:
        raise error
    return 0


def choose_mode(*, as_json: bool, bars: bool, is_terminal: bool) -> Mode:
    """``--json`` wins, then ``--bars``; without either, bars on a terminal, else plain."""
    if as_json:
        return "json"
    if bars or is_terminal:
        return "bars"
    return "plain"

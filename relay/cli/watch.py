"""``relay watch``: follow events from a gateway in the terminal, reconnecting by itself.

Three views of the same subscription:

- live progress bars (:class:`ProgressBoard` drawn with rich), one row per
  session, the default on a terminal or with ``--bars``;
- one JSON event frame per line with ``--json``, for scripts;
- one plain line per event otherwise (stdout is a pipe or a file).

:func:`follow` is the network loop shared by all three: it resumes after each
reconnect from the last event id seen, so nothing is missed or repeated. When
the gateway says a type's history was reset, ids seen before mean nothing any
more: the resume point is dropped and the state is loaded again. A gateway
that refuses the token (or wants one) ends it with :class:`TokenRefused`, since
trying again with the same token cannot succeed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, TextIO

import aiohttp
import orjson
from rich.console import Console
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from relay.protocol.event import TERMINAL_STATUSES
from relay.protocol.frames import ANY_TYPE
from relay.protocol.progress import estimated_time_remaining

logger = logging.getLogger(__name__)

# The gateway's close codes for a token it will not take.
CLOSE_UNAUTHORIZED = 4001
CLOSE_TOKEN_EXPIRED = 4002

RECONNECT_START = 0.2
RECONNECT_CAP = 5.0
REFRESH_INTERVAL = 0.25
MAX_ROWS = 40
BAR_WIDTH = 24

Mode = Literal["bars", "json", "plain"]
FrameHandler = Callable[[dict[str, Any]], None]
StateHandler = Callable[[str, float | None], None]

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


class TokenRefused(Exception):
    """The gateway wants a token and was given none, a bad one, or (``expired``) an old one."""

    def __init__(self, *, expired: bool) -> None:
        super().__init__("token expired" if expired else "authentication required")
        self.expired = expired


def ws_url(gateway: str) -> str:
    """The WebSocket address of a gateway given by its HTTP address."""
    base = gateway.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :] + "/ws"
    if base.startswith("http://"):
        return "ws://" + base[len("http://") :] + "/ws"
    return base + "/ws"


def _items(text: str) -> list[Any]:
    decoded = orjson.loads(text)
    return decoded if isinstance(decoded, list) else [decoded]


def event_frames(text: str) -> Iterator[dict[str, Any]]:
    """The event frames in one server frame, which may carry a JSON array of them."""
    for item in _items(text):
        if isinstance(item, dict) and "event" in item:
            yield item


def format_event(frame: dict[str, Any]) -> str:
    """One readable line for an event frame."""
    data = frame["data"]
    line = (
        f"{data['workflow_type']:<12} {data['session_id']:<24} "
        f"{data['progress']:>6}%  {data['status']:<16} {data['step']}"
    )
    if data.get("error"):
        line += f"  error: {data['error']}"
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

    def set_connection(self, state: str, delay: float | None = None) -> None:
        """Say whether the subscription is live: ``connecting``, ``live``, ``disconnected``."""
        self.connection = f"{state}, retrying in {delay:.1f}s" if delay is not None else state

    def forget_type(self, workflow_type: str) -> None:
        """Drop every row of ``workflow_type``: its history was reset, the rows may be wrong."""
        for key in [k for k, row in self._rows.items() if row.workflow_type == workflow_type]:
            del self._rows[key]

    def update(self, frame: dict[str, Any]) -> None:
        """Take one event frame as its session's latest."""
        data = frame["data"]
        now = self._clock()
        session_id = str(data["session_id"])
        progress = float(data["progress"])
        ts = float(data.get("ts") or now * 1000)
        row = self._rows.get(session_id)
        if row is None:
            row = SessionRow(
                workflow_type=str(data["workflow_type"]),
                session_id=session_id,
                step=str(data["step"]),
                progress=progress,
                status=str(data.get("status", "running")),
                error=None,
                first_ts=ts,
                first_progress=progress,
                eta=None,
                seen_at=now,
            )
            self._rows[session_id] = row
            self._evict()
        row.workflow_type = str(data["workflow_type"])
        row.step = str(data["step"])
        row.progress = progress
        row.status = str(data.get("status", "running"))
        row.error = data.get("error")
        row.seen_at = now
        row.eta = estimated_time_remaining(
            status=row.status,
            progress=progress,
            metadata=data.get("metadata"),
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


async def follow(
    gateway: str,
    workflow_type: str,
    session_id: str | None,
    *,
    on_frame: FrameHandler,
    on_state: StateHandler | None = None,
    on_reset: FrameHandler | None = None,
    token: str | None = None,
    snapshot: bool = False,
) -> None:
    """Hand every event of the subscription to ``on_frame``, resuming after each reconnect.

    ``on_state(state, delay)`` hears ``connecting``, ``live`` (once the
    gateway confirmed the subscription) and ``disconnected`` with the delay
    before the next attempt; the default prints disconnections to stderr.
    With ``snapshot``, a subscription that does not resume starts with the
    latest event of every session still running. ``on_reset(frame)`` hears a
    ``reset`` frame (the default prints it to stderr); with ``snapshot`` the
    latest events are then asked for again, from what the gateway now holds.
    Raises :class:`TokenRefused` when the gateway closes with 4001 or 4002, or
    answers the upgrade with 401.
    """

    def default_state(state: str, delay: float | None) -> None:
        if state == "disconnected":
            print(f"# disconnected, reconnecting in {delay:.1f}s", file=sys.stderr, flush=True)

    def default_reset(frame: dict[str, Any]) -> None:
        message = f"{frame.get('workflow_type')}: {frame.get('message', 'history was reset')}"
        print(f"# {message}", file=sys.stderr, flush=True)

    state_changed = on_state or default_state
    was_reset = on_reset or default_reset
    last_id: str | None = None
    delay = RECONNECT_START
    async with aiohttp.ClientSession() as http:
        while True:
            subscribe: dict[str, Any] = {"action": "subscribe", "workflow_type": workflow_type}
            if session_id:
                subscribe["session_id"] = session_id
            if last_id and workflow_type != ANY_TYPE:
                subscribe["since"] = last_id
            elif snapshot:
                subscribe["snapshot"] = True
            state_changed("connecting", None)
            try:
                async with http.ws_connect(ws_url(gateway), autoping=True, heartbeat=30) as ws:
                    if token:
                        await ws.send_str(orjson.dumps({"action": "auth", "token": token}).decode())
                    await ws.send_str(orjson.dumps(subscribe).decode())
                    delay = RECONNECT_START
                    async for message in ws:
                        if message.type is not aiohttp.WSMsgType.TEXT:
                            continue
                        for item in _items(message.data):
                            if not isinstance(item, dict):
                                continue
                            if "event" in item:
                                last_id = item["id"]
                                on_frame(item)
                            elif item.get("type") == "subscribed":
                                state_changed("live", None)
                            elif item.get("type") == "reset":
                                # Like recovered: false: ids from before mean nothing now.
                                last_id = None
                                was_reset(item)
                                if snapshot:
                                    again = {**subscribe, "snapshot": True}
                                    again.pop("since", None)
                                    await ws.send_str(orjson.dumps(again).decode())
                            elif item.get("type") == "error":
                                state_changed(f"error: {item.get('message', '')}", None)
                if ws.close_code in (CLOSE_UNAUTHORIZED, CLOSE_TOKEN_EXPIRED):
                    raise TokenRefused(expired=ws.close_code == CLOSE_TOKEN_EXPIRED)
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status == 401:
                    raise TokenRefused(expired=False) from None
                logger.debug("watch connection refused: %s", exc)
            except (aiohttp.ClientError, OSError) as exc:
                logger.debug("watch connection lost: %s", exc)
            state_changed("disconnected", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_CAP)


async def watch_events(
    gateway: str,
    workflow_type: str,
    session_id: str | None,
    *,
    as_json: bool = False,
    token: str | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Print every event of the subscription, one line each, resuming after each reconnect."""

    def show(frame: dict[str, Any]) -> None:
        line = orjson.dumps(frame).decode() if as_json else format_event(frame)
        print(line, file=out, flush=True)

    await follow(gateway, workflow_type, session_id, on_frame=show, token=token)
    return 0


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
        following = asyncio.create_task(
            follow(
                gateway,
                workflow_type,
                session_id,
                on_frame=board.update,
                on_state=board.set_connection,
                on_reset=lambda frame: board.forget_type(str(frame.get("workflow_type"))),
                token=token,
                snapshot=True,
            )
        )
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

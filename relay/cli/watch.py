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
import logging
import math
import signal
import sys
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, TextIO

import aiohttp
from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.text import Text

from relay.client.subscriber import Connection, Reset, Update, watch
from relay.protocol.children import (
    CHILDREN_COMPLETED_FIELD,
    CHILDREN_COUNT_FIELD,
    PARENT_CHILDREN_FIELD,
    PARENT_COMPLETED_FIELD,
    PARENT_PROGRESS_FIELD,
)
from relay.protocol.event import ONGOING_STATUSES, TERMINAL_STATUSES, ProgressEvent
from relay.protocol.frames import ANY_TYPE, encode_event_frame
from relay.protocol.numbers import format_number
from relay.protocol.plans import OVERALL_FIELD, PlanPosition
from relay.protocol.progress import estimated_time_remaining, known_duration
from relay.server.http_sessions import MAX_LIST

logger = logging.getLogger(__name__)

REFRESH_INTERVAL = 0.25
LINGER = 60.0
"""Seconds an ended session stays on the board after its last event."""
FETCH_TIMEOUT = 10.0
"""Seconds the running sessions' starts may take to come, once live."""
MAX_ROWS = 500
"""Sessions remembered at most, whatever fits on the screen; ended ones are forgotten first."""

Mode = Literal["bars", "json", "plain"]

STATUS_STYLES = {
    "running": "cyan",
    "retrying": "magenta",
    "completed": "bold green",
    "failed": "bold red",
    "cancelled": "grey50",
    "cancel_requested": "yellow",
    "stalled": "bold dark_orange",
}
BAR_STYLES = {
    "running": "cyan",
    "retrying": "magenta",
    "completed": "green",
    "failed": "red",
    "cancelled": "grey50",
    "cancel_requested": "yellow",
    "stalled": "dark_orange",
}
CONNECTION_STYLES = {
    "connecting": "yellow",
    "live": "bold green",
    "disconnected": "bold red",
    "error": "bold red",
}
SUMMARY_STATUSES = ("running", "completed", "failed", "cancelled")


def one_line(text: str) -> str:
    """``text`` with every run of whitespace, newlines included, made one space."""
    return " ".join(text.split())


def format_event(
    event: ProgressEvent,
    position: PlanPosition | None = None,
    family: Mapping[str, float] | None = None,
) -> str:
    """One readable line for an event; with a plan, its step's place and the overall figure.

    ``family``: the figures the gateway added about the session's children
    (a parent's count, and its aggregate) or its parent's (see
    :func:`relay.protocol.children.family_in`).
    """
    line = (
        f"{event.workflow_type:<12} {event.session_id:<24} "
        f"{format_number(event.progress):>6}%  {event.status:<16} {event.step}"
    )
    if position is not None:
        place = "?" if position.step_index is None else position.step_index
        line += f"  step {place}/{position.step_count}"
        if position.overall is not None:
            line += f", overall {format_percent(position.overall)}"
    family = family or {}
    if CHILDREN_COUNT_FIELD in family:
        line += f"  children {_children_text(family)}"
        if position is None and OVERALL_FIELD in family:
            line += f", overall {format_percent(family[OVERALL_FIELD])}"
    if PARENT_PROGRESS_FIELD in family:
        line += f"  parent {event.parent_id} {format_percent(family[PARENT_PROGRESS_FIELD])}"
    if event.attempt is not None:
        line += f"  attempt {event.attempt}"
    if event.error:
        line += f"  error: {one_line(event.error)}"
    return line


def _children_text(family: Mapping[str, float]) -> str:
    """``2/5 done``: a parent's children completed, of those counted."""
    completed = format_number(family.get(CHILDREN_COMPLETED_FIELD, 0))
    return f"{completed}/{format_number(family[CHILDREN_COUNT_FIELD])} done"


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


@dataclass(frozen=True, slots=True)
class SessionStart:
    """How a session began, as the gateway knows it: ``started_at`` in epoch milliseconds."""

    started_at: float
    first_progress: float
    """The overall progress at the first event (with a plan, not the first step's own)."""
    typical_duration: float | None = None
    typical_step_durations: tuple[float | None, ...] | None = None
    """What the gateway learned sessions of its type and its plan's steps take, in seconds."""


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
    from_start: bool
    """Whether ``first_ts`` and ``first_progress`` are the session's start, not a later sighting."""
    last_ts: float
    metadata: dict[str, Any]
    """The latest event's, kept to estimate again when the start becomes known."""
    eta: float | None
    """Seconds left when the latest event arrived."""
    seen_at: float
    """The board's clock when the latest event arrived."""
    attempt: int | None = None
    """The latest attempt an event named, if any did."""
    overall: float = 0.0
    """The whole workflow's progress: the gateway's figure with a plan, else ``progress``."""
    step_index: int | None = None
    step_count: int | None = None
    """The step's place in the plan (1-based) and the plan's length, with a plan."""
    typical_duration: float | None = None
    typical_step_durations: tuple[float | None, ...] | None = None
    """The gateway's learned figures, from its state of the session (see :class:`SessionStart`)."""
    children: tuple[int, int] | None = None
    """A parent's children completed and counted, as the gateway's latest figures say."""

    @property
    def ended(self) -> bool:
        """Whether the session completed, failed or was cancelled."""
        return self.status in TERMINAL_STATUSES

    @property
    def took(self) -> float | None:
        """Seconds from start to end of an ended session, when its start is known."""
        if not self.ended or not self.from_start:
            return None
        return max(self.last_ts - self.first_ts, 0.0) / 1000


@dataclass(frozen=True, slots=True)
class Column:
    """One column of the board: ``width`` is its minimum until the spare room is shared."""

    key: str
    heading: str
    width: int
    justify: Literal["left", "right"] = "left"


class ProgressBoard:
    """The state of every session seen, rendered as a header line and one line a session.

    Feed it event frames with :meth:`update`; rich renders it at the console's
    width and height. Running sessions come first, the most recently updated
    on top, then the sessions that ended in the last ``linger`` seconds, the
    most recent first; as many as fit, the rest counted on the last line.
    Column widths depend on the width of the terminal and the longest id and
    type seen, never on the values shown, so nothing shifts as sessions move.

    A row says ``took 5s`` when it ends, and estimates from the session's real
    start, when that start is known: told by :meth:`learn_starts` (the
    gateway's running sessions, asked for each time the subscription goes
    live), or seen, the session's first event having come after that answer
    on the same live connection. Otherwise only a first event at 0% is taken
    for the start. The sessions of that answer also take what the gateway
    learned of their type and plan's steps, so their estimate is the
    gateway's; the others are estimated without.
    It does no I/O, so it can be driven and rendered in tests.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_rows: int = MAX_ROWS,
        linger: float = LINGER,
        title: str | None = None,
    ) -> None:
        self._clock = clock
        self._max_rows = max_rows
        self._linger = linger
        self._rows: dict[str, SessionRow] = {}
        # The starts of the latest answer, for the sessions whose first event is still to come.
        self._starts: dict[str, SessionStart] = {}
        self._live = False
        # Whether a session the answer did not name shows up with its first event. Not
        # before the answer: the events ahead of it (a snapshot among them) may be of
        # sessions that ended or had a cancel requested before the gateway answered.
        self._sees_starts = False
        self._id_width = len("session")
        self._type_width = len("type")
        self.title = title
        self.connection: str = "connecting"
        self._retry_at: float | None = None
        self._connection_note: str | None = None

    def get(self, session_id: str) -> SessionRow | None:
        """The row of one session, if still on the board."""
        self._expire()
        return self._rows.get(session_id)

    def set_connection(self, change: Connection) -> None:
        """Take the subscription's new state (``connecting``, ``live``, ``disconnected``...)."""
        self.connection = change.state
        if change.state != "error":  # a refused frame leaves the connection as it was
            self._live = change.state == "live"
            self._sees_starts = False
        self._connection_note = change.message
        self._retry_at = None if change.retry_in is None else self._clock() + change.retry_in

    def connection_text(self) -> str:
        """The state as the header shows it, with the seconds left before a retry."""
        shown = self.connection
        if self._connection_note is not None:
            shown += f": {one_line(self._connection_note)}"
        if self._retry_at is not None:
            left = max(self._retry_at - self._clock(), 0.0)
            shown += f", retry in {math.ceil(left)}s"
        return shown

    def learn_starts(self, starts: Mapping[str, SessionStart]) -> None:
        """Take the starts of the running sessions, listed after the connection went live.

        Rows on the board take their session's start now, the others when
        their first event comes. Until the connection goes down, a session
        not named here that shows up was seen from its start. An answer to a
        request made before the latest change of connection must not be given.
        """
        self._starts = dict(starts)
        for session_id, start in starts.items():
            row = self._rows.get(session_id)
            if row is not None:
                row.first_ts = start.started_at
                row.first_progress = start.first_progress
                row.from_start = True
                row.typical_duration = start.typical_duration
                row.typical_step_durations = start.typical_step_durations
                row.eta = _estimate(row)
        self._sees_starts = self._live

    def forget_type(self, workflow_type: str) -> None:
        """Drop every row of ``workflow_type``: its history was reset, the rows may be wrong."""
        for key in [k for k, row in self._rows.items() if row.workflow_type == workflow_type]:
            del self._rows[key]

    def update(
        self,
        event: ProgressEvent,
        position: PlanPosition | None = None,
        family: Mapping[str, float] | None = None,
    ) -> None:
        """Take one event as its session's latest, with its place in a plan as delivered.

        ``family`` (see :func:`format_event`) gives a parent's row its
        children's figures, from its own events and from its children's.
        """
        family = family or {}
        self._parent_moved(event, family)
        now = self._clock()
        ts = float(event.ts or now * 1000)
        row = self._rows.get(event.session_id)
        if row is None:
            start = self._starts.get(event.session_id)
            row = SessionRow(
                workflow_type=event.workflow_type,
                session_id=event.session_id,
                step=event.step,
                progress=event.progress,
                status=event.status,
                error=None,
                first_ts=ts if start is None else start.started_at,
                first_progress=_overall(event, position, event.progress)
                if start is None
                else start.first_progress,
                from_start=start is not None or self._sees_starts or event.progress == 0,
                last_ts=ts,
                metadata=event.metadata,
                eta=None,
                seen_at=now,
                typical_duration=None if start is None else start.typical_duration,
                typical_step_durations=None if start is None else start.typical_step_durations,
            )
            self._rows[event.session_id] = row
            self._id_width = max(self._id_width, len(event.session_id))
            self._type_width = max(self._type_width, len(event.workflow_type))
            self._evict()
        elif event.plan is not None:
            # The learned step figures were for the plan the gateway knew; this one may differ.
            row.typical_step_durations = None
        row.workflow_type = event.workflow_type
        row.step = event.step
        row.progress = event.progress
        row.overall = _overall(event, position, row.overall)
        if position is None and OVERALL_FIELD in family:
            row.overall = float(family[OVERALL_FIELD])
        if CHILDREN_COUNT_FIELD in family:
            row.children = (
                int(family.get(CHILDREN_COMPLETED_FIELD, 0)),
                int(family[CHILDREN_COUNT_FIELD]),
            )
        row.step_index = None if position is None else position.step_index
        row.step_count = None if position is None else position.step_count
        row.status = event.status
        row.error = event.error
        if event.attempt is not None:
            row.attempt = event.attempt
        row.last_ts = ts
        row.metadata = event.metadata
        row.seen_at = now
        row.eta = _estimate(row)

    def _parent_moved(self, event: ProgressEvent, family: Mapping[str, float]) -> None:
        """A child's event carries its parent's figures after it: the parent's row takes them."""
        parent = self._rows.get(event.parent_id) if event.parent_id is not None else None
        if parent is None or parent.ended or PARENT_PROGRESS_FIELD not in family:
            return
        parent.overall = float(family[PARENT_PROGRESS_FIELD])
        if PARENT_CHILDREN_FIELD in family:
            parent.children = (
                int(family.get(PARENT_COMPLETED_FIELD, 0)),
                int(family[PARENT_CHILDREN_FIELD]),
            )
        parent.last_ts = max(parent.last_ts, float(event.ts or 0))
        parent.seen_at = self._clock()
        parent.eta = _estimate(parent)

    def remaining(self, row: SessionRow) -> float | None:
        """Seconds left now: the estimate at the latest event, counted down since."""
        if row.eta is None or row.ended:
            return row.eta
        return max(row.eta - (self._clock() - row.seen_at), 0.0)

    def _expire(self) -> None:
        """Forget the sessions that ended more than ``linger`` seconds ago."""
        horizon = self._clock() - self._linger
        for key in [k for k, row in self._rows.items() if row.ended and row.seen_at < horizon]:
            del self._rows[key]

    def _evict(self) -> None:
        """Keep ``max_rows`` rows: the ended sessions go first, then the least recently updated."""
        excess = len(self._rows) - self._max_rows
        if excess <= 0:
            return
        by_value = sorted(self._rows.values(), key=lambda row: (not row.ended, row.seen_at))
        for row in by_value[:excess]:
            del self._rows[row.session_id]

    def rows(self) -> list[SessionRow]:
        """The rows in board order: running by latest update, then ended by latest end."""
        self._expire()
        return sorted(self._rows.values(), key=lambda row: (row.ended, -row.seen_at))

    def counts(self) -> dict[str, int]:
        """Sessions on the board that are running (cancel requests included) or ended, by status."""
        self._expire()
        counts = dict.fromkeys(SUMMARY_STATUSES, 0)
        for row in self._rows.values():
            counts[row.status if row.ended else "running"] += 1
        return counts

    def summary(self) -> str:
        """``3 running · 2 completed · 0 failed · 1 cancelled``."""
        return " · ".join(f"{count} {status}" for status, count in self.counts().items())

    def header(self) -> Text:
        """The first line: connection state, counts, then what is watched."""
        state = Text(self.connection_text(), style=CONNECTION_STYLES.get(self.connection, ""))
        line = Text.assemble(state, "  ", self.summary())
        if self.title:
            line.append(f"  {self.title}", style="dim")
        return line

    def columns(self, width: int) -> list[Column]:
        """The columns that fit ``width``, widened to share the spare room.

        Session, bar, percentage and status always show; time, type and step
        join in that order while they fit at their minimum width.
        """
        id_width = min(self._id_width, 24)
        shown = {
            "session": Column("session", "session", min(id_width, 8)),
            "bar": Column("bar", "progress", 8),
            "percent": Column("percent", "%", 5, "right"),
            "status": Column("status", "status", 9),
        }
        optional = [
            Column("time", "time", 10, "right"),
            Column("type", "type", min(self._type_width, 12)),
            Column("step", "step", 12),
        ]
        for column in optional:
            if _width_of(shown.values()) + 1 + column.width > width:
                break
            shown[column.key] = column
        spare = width - _width_of(shown.values())
        # Room goes first where it saves a truncation, then to the bar and step, the rest
        # to the status, where an error has all of it.
        for key, wanted in [
            ("session", id_width),
            ("status", 16),
            ("step", 16),
            ("bar", 20),
            ("step", 30),
            ("bar", 30),
            ("status", width),
        ]:
            growing = shown.get(key)
            if growing is None or spare <= 0:
                continue
            grow = max(min(wanted - growing.width, spare), 0)
            shown[key] = replace(growing, width=growing.width + grow)
            spare -= grow
        order = ["type", "session", "bar", "percent", "step", "time", "status"]
        return [shown[key] for key in order if key in shown]

    def render(self, width: int, height: int | None = None) -> list[Text]:
        """The board's lines for a terminal of ``width`` columns and ``height`` lines."""
        columns = self.columns(width)
        rows = self.rows()
        lines = [self.header()]
        lines.append(_line([(Text(c.heading), c) for c in columns], style="bold"))
        room = len(rows) if height is None else max(height - len(lines), 0)
        shown = rows if len(rows) <= room else rows[: max(room - 1, 0)]
        lines.extend(self._row_line(row, columns) for row in shown)
        if len(shown) < len(rows) and room > 0:
            hidden = rows[len(shown) :]
            running = sum(not row.ended for row in hidden)
            more = f"… {len(hidden)} more ({running} running)"
            lines.append(Text(more, style="dim"))
        for line in lines:
            line.truncate(width, overflow="ellipsis")
        return lines[:height] if height is not None else lines

    def _row_line(self, row: SessionRow, columns: list[Column]) -> Text:
        style = STATUS_STYLES.get(row.status, "")
        status = row.status
        if row.status == "retrying" and row.attempt is not None:
            status += f" (attempt {row.attempt})"
        if row.status in ("failed", "retrying") and row.error:
            status += f": {one_line(row.error)}"
        cells = {
            "type": Text(row.workflow_type),
            "session": Text(row.session_id),
            "percent": Text(format_percent(row.overall)),
            "step": Text(_step_text(row)),
            "time": Text(self._time(row), style="dim" if row.ended else ""),
            "status": Text(status, style=style),
        }
        return _line([(_bar(row, c.width) if c.key == "bar" else cells[c.key], c) for c in columns])

    def _time(self, row: SessionRow) -> str:
        """``took 5s`` for an ended session seen from its start, the time left for a running one."""
        if row.ended:
            took = row.took
            return "" if took is None else f"took {format_eta(took)}"
        left = self.remaining(row)
        # An estimate run out says nothing useful: the session is late, not done.
        return "" if left is None or round(left) == 0 else format_eta(left)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from self.render(options.max_width, options.height or options.max_height)


def _overall(event: ProgressEvent, position: PlanPosition | None, known: float) -> float:
    """The overall figure after ``event``: a step the plan does not list leaves ``known``."""
    if position is None:
        return event.progress
    return known if position.overall is None else position.overall


def _step_text(row: SessionRow) -> str:
    """``2/3 generating 50%`` with a plan; the step alone without one.

    A parent's starts with its children: ``children 2/5 done``.
    """
    step = one_line(row.step)
    if row.step_count is not None:
        place = "?" if row.step_index is None else str(row.step_index)
        step = f"{place}/{row.step_count} {step} {format_percent(row.progress)}"
    if row.children is None:
        return step
    completed, count = row.children
    return f"children {completed}/{count} done  {step}"


def _estimate(row: SessionRow) -> float | None:
    """Seconds left as of the row's latest event, by the gateway's rule, on the overall figure."""
    return estimated_time_remaining(
        status=row.status,
        progress=row.overall,
        metadata=row.metadata,
        first_progress=row.first_progress,
        started_at=row.first_ts,
        updated_at=row.last_ts,
        typical_duration=row.typical_duration,
        typical_step_durations=row.typical_step_durations,
        step_index=row.step_index,
        step_progress=row.progress,
    )


def _width_of(columns: Iterable[Column]) -> int:
    """The width of columns side by side, one space apart."""
    widths = [column.width for column in columns]
    return sum(widths) + len(widths) - 1


def _line(cells: list[tuple[Text, Column]], style: str = "") -> Text:
    """Cells cut or padded to their column's width, one space apart."""
    line = Text(style=style, no_wrap=True, overflow="ellipsis")
    for index, (cell, column) in enumerate(cells):
        if index:
            line.append(" ")
        cell.truncate(column.width, overflow="ellipsis")
        if column.justify == "right":
            cell.pad_left(column.width - cell.cell_len)
        else:
            cell.pad_right(column.width - cell.cell_len)
        line.append_text(cell)
    return line


def _bar(row: SessionRow, width: int) -> Text:
    """A bar of ``width`` cells, its filled part in the status's colour."""
    filled = round(width * min(max(row.overall, 0.0), 100.0) / 100)
    return Text.assemble(
        ("━" * filled, BAR_STYLES.get(row.status, "cyan")),
        ("─" * (width - filled), "grey35"),
    )


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
                line = encode_event_frame(
                    str(update.id), update.event, update.position, update.family
                )
            else:
                line = format_event(update.event, update.position, update.family)
            print(line, file=out, flush=True)
    return 0


def note(message: str) -> None:
    """A ``#`` line on stderr, beside the events on stdout."""
    print(f"# {message}", file=sys.stderr, flush=True)


async def running_starts(
    http: aiohttp.ClientSession, gateway: str, workflow_type: str, *, token: str | None = None
) -> dict[str, SessionStart]:
    """The starts of the sessions not yet ended on ``gateway`` (of ``workflow_type``, unless ``*``).

    One request per ongoing status (running, stalled, retrying...): the list
    takes one status, and every session that has not ended must be named.
    """
    headers = {"authorization": f"Bearer {token}"} if token else {}
    url = gateway.rstrip("/") + "/api/workflows/sessions"
    starts: dict[str, SessionStart] = {}
    for status in ONGOING_STATUSES:
        query = {"status": status, "limit": str(MAX_LIST)}
        if workflow_type != ANY_TYPE:
            query["workflow_type"] = workflow_type
        async with http.get(url, params=query, headers=headers, raise_for_status=True) as answer:
            listed = await answer.json()
        for item in listed:
            first = item.get("first_overall_progress", item["first_progress"])
            start = SessionStart(
                float(item["started_at"]),
                float(first),
                _seconds(item.get("typical_duration")),
                _step_seconds(item.get("typical_step_durations")),
            )
            starts[str(item["session_id"])] = start
    return starts


def _seconds(value: object) -> float | None:
    """A learned figure from the gateway's answer; what is not a positive number is unknown."""
    return float(value) if known_duration(value) else None


def _step_seconds(value: object) -> tuple[float | None, ...] | None:
    """The answer's learned figures per step, when it gives a list."""
    return tuple(_seconds(item) for item in value) if isinstance(value, list) else None


class _StartFetcher:
    """Asks for the running sessions' starts each time the subscription goes live."""

    def __init__(
        self,
        board: ProgressBoard,
        http: aiohttp.ClientSession,
        gateway: str,
        workflow_type: str,
        token: str | None,
    ) -> None:
        self._board = board
        self._http = http
        self._gateway = gateway
        self._workflow_type = workflow_type
        self._token = token
        self._task: asyncio.Task[None] | None = None

    def on_state(self, change: Connection) -> None:
        """Give the board the change, and start or drop the request it calls for."""
        self._board.set_connection(change)
        if change.state == "error":
            return
        # An answer to a request of an earlier connection would say nothing of this one.
        self.cancel()
        if change.state == "live":
            self._task = asyncio.create_task(self._fetch())

    def cancel(self) -> None:
        """Drop the request under way, if any."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def __aenter__(self) -> _StartFetcher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        task = self._task
        self.cancel()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def _fetch(self) -> None:
        try:
            starts = await running_starts(
                self._http, self._gateway, self._workflow_type, token=self._token
            )
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError, TypeError) as exc:
            # The board goes on without: its rows keep the starts it saw itself.
            logger.debug("running sessions not fetched from %s: %r", self._gateway, exc)
            return
        self._board.learn_starts(starts)


async def _show_on(board: ProgressBoard, updates: AsyncGenerator[Update, None]) -> None:
    async with contextlib.aclosing(updates):
        async for update in updates:
            board.update(update.event, update.position, update.family)


async def watch_bars(
    gateway: str,
    workflow_type: str,
    session_id: str | None,
    *,
    token: str | None = None,
    console: Console | None = None,
    linger: float | None = None,
) -> int:
    """Show live progress bars of the subscription until interrupted (SIGINT or SIGTERM).

    The board is drawn at the terminal's size, as it is at each refresh; ended
    sessions stay ``linger`` seconds (default :data:`LINGER`).
    """
    target = workflow_type if session_id is None else f"{workflow_type} / {session_id}"
    board = ProgressBoard(
        title=f"{target} @ {gateway}", linger=LINGER if linger is None else linger
    )
    console = console or Console(force_terminal=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        _StartFetcher(board, http, gateway, workflow_type, token) as fetcher,
    ):
        with Live(
            board,
            console=console,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
            # The board fits itself to the height; rich's own cut would drop the last line.
            vertical_overflow="crop",
        ) as live:
            updates = watch(
                gateway,
                workflow_type=workflow_type,
                session_id=session_id,
                token=token,
                snapshot=True,
                on_state=fetcher.on_state,
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

"""Simulated workflows, so that a new user sees progress move at once.

``relay demo`` publishes them to a gateway (or straight to Redis) and ``relay
serve --demo`` runs them beside the gateway it starts, on the gateway's store.
Either way several map, character and encounter sessions run at the same
time, at different speeds, through realistic steps, with
``metadata.estimated_time_remaining`` most of the time. Now and then one fails
with an error, and now and then someone asks for one to stop: the simulated
worker then learns so from its next report and ends ``cancelled``, exactly as
a real worker using ``raise_on_cancel=True`` does. Now and then an attempt
fails and is retried (``retrying``, attempt 2, then on to the end); now and
then a worker goes silent for longer than the gateway's stall time, so that
the session is ``stalled`` until its next report makes it running again; and
more rarely a worker hangs and never reports again, so that its session stays
stalled (or is failed by a gateway with ``RELAY_ABANDON_AFTER``). Now and then
a map fans out: it reports no progress of its own and starts a few ``tile``
sessions, its children, whose reports move its one bar (see
:mod:`relay.protocol.children`).

Every session is reported with the project's own reporting sessions
(:class:`relay.client.reporting_session.AsyncReportingSession`), so the
events are exactly what a real worker would publish, heartbeats included:
sessions send them at the pace the stall time the demo is told of calls for,
except a silent one, whose silence would otherwise be filled. At most ``max_sessions``
run at once; whatever is still running when the simulation stops is reported
``cancelled`` (the worker was interrupted).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from aiohttp import web
from redis.exceptions import RedisError

from relay.client.redis_urls import AsyncStore, open_async_redis
from relay.client.reporters import AsyncReporter, HttpReporter
from relay.client.reporting_session import AsyncReportingSession, describe
from relay.client.retry import ReportError, RetryPolicy
from relay.protocol.entries import Receipt
from relay.protocol.event import ProgressEvent
from relay.protocol.liveness import DEFAULT_STALL_AFTER, heartbeat_interval
from relay.protocol.plans import PlanSpec

logger = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0
ENDED_KEPT = 1_000
CANCEL_ATTEMPTS = 10
CANCEL_RETRY_PAUSE = 0.2
BACKEND_ERRORS = (ReportError, RedisError, OSError, aiohttp.ClientError)


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a simulated workflow: its name, its share of the work, what it reports."""

    name: str
    weight: float
    details: tuple[str, ...]


WORKFLOWS: dict[str, tuple[Step, ...]] = {
    "map": (
        Step("generating heightmap", 2, ("octave 1 of 4", "octave 3 of 4", "erosion pass")),
        Step("placing biomes", 2, ("forests", "deserts", "tundra", "wetlands")),
        Step("carving rivers", 1, ("tracing watersheds", "cutting valleys")),
        Step("analyzing forests", 2, ("oak groves", "pine ridges", "undergrowth")),
        Step("placing settlements", 1, ("villages", "a port town", "ruins")),
        Step("rendering tiles", 3, ("zoom level 1", "zoom level 2", "zoom level 3")),
    ),
    "character": (
        Step("rolling attributes", 1, ("strength", "dexterity", "wisdom")),
        Step("choosing class and background", 1, ("ranger", "sage", "folk hero")),
        Step("writing backstory", 3, ("childhood", "the first adventure", "a dark secret")),
        Step("generating portrait", 3, ("sketching", "colouring", "lighting")),
        Step("equipping gear", 1, ("weapons", "armour", "a trusty lantern")),
    ),
    "encounter": (
        Step("selecting monsters", 2, ("goblins", "an owlbear", "cultists")),
        Step("balancing difficulty", 1, ("party of 4, level 5", "adjusting hit points")),
        Step("placing terrain", 2, ("cover", "difficult terrain", "a collapsing bridge")),
        Step("writing tactics", 2, ("ambush", "retreat at half health")),
        Step("assigning loot", 1, ("coins", "a potion of healing", "a cursed ring")),
    ),
}

FAILURES: dict[str, tuple[tuple[type[Exception], str], ...]] = {
    "map": (
        (TimeoutError, "tile renderer did not answer within 30 s"),
        (ValueError, "biome table has no entry for 'glacier'"),
    ),
    "character": (
        (RuntimeError, "portrait model ran out of GPU memory"),
        (ValueError, "backstory is over the 4,000 character limit"),
    ),
    "encounter": (
        (RuntimeError, "no monsters fit challenge rating 23"),
        (TimeoutError, "loot service did not answer within 10 s"),
    ),
}

# How long a session pauses between reports: fast, normal and slow workers.
PACES: tuple[tuple[float, float], ...] = ((0.3, 0.6), (0.5, 1.2), (1.0, 2.0))

# How many tiles a map that fans out starts, at least and at most.
FAN_OUT = (3, 5)

# A silent worker is quiet for this many stall times: long enough for a
# gateway, which checks ten times a stall time, to notice it surely.
SILENCE = (1.5, 2.5)


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """How the simulation behaves."""

    rate: float = 1.0
    """New sessions started per second (while fewer than ``max_sessions`` run)."""
    max_sessions: int = 12
    """Sessions running at once, at most."""
    fail_chance: float = 0.1
    """Chance that a session fails part way with an error."""
    cancel_chance: float = 0.1
    """Chance that someone asks for a session to stop part way."""
    retry_chance: float = 0.08
    """Chance that an attempt fails part way and the session is retried."""
    stall_chance: float = 0.05
    """Chance that a worker goes silent for longer than ``stall_after``, then carries on."""
    hang_chance: float = 0.02
    """Chance that a worker goes silent and never reports again (until the demo stops)."""
    fan_out_chance: float = 0.15
    """Chance that a map fans out to tile sessions, its children, and shows their aggregate."""
    stall_after: float = DEFAULT_STALL_AFTER
    """The stall time of the gateway the demo publishes to (0: it has none)."""
    safe_start: int = 3
    """The first sessions (one of each type) always run to completion, the first one quickly."""
    pace: tuple[tuple[float, float], ...] = PACES
    """Pause ranges between reports, in seconds; each session picks one."""
    seed: int | None = None
    """Seed of the random choices, for a repeatable run."""


class Publisher(Protocol):
    """What the simulation needs from where it publishes."""

    def session(
        self,
        workflow_type: str,
        session_id: str,
        *,
        heartbeat_interval: float | None,
        plan: PlanSpec | None,
    ) -> AsyncReportingSession:
        """A reporting session that raises CancelRequested on a cancellation.

        It sends heartbeats every ``heartbeat_interval`` seconds of silence, or none for None,
        and declares ``plan`` (if any) with its first event.
        """

    async def request_cancel(self, session: AsyncReportingSession) -> str:
        """Ask for ``session`` to stop, as a user would; answers what happened."""


@dataclass(frozen=True, slots=True)
class Ended:
    """How one simulated session ended."""

    workflow_type: str
    session_id: str
    status: str
    error: str | None = None


@dataclass(slots=True)
class _Plan:
    workflow_type: str
    session_id: str
    ticks: list[tuple[str, float, str]]
    pause: tuple[float, float]
    with_eta: bool
    fail_at: int | None
    failure: Exception | None
    cancel_at: int | None
    retry_at: int | None = None
    silent_at: int | None = None
    silence: float | None = None
    """Seconds the worker is quiet after the report at ``silent_at``; None: for ever."""
    tiles: int = 0
    """Child sessions of type ``tile`` it fans out to, instead of reporting steps itself."""

    @property
    def silent(self) -> bool:
        """Whether the worker goes quiet at some point (and so must send no heartbeats)."""
        return self.silent_at is not None


class Simulation:
    """Runs simulated sessions through a :class:`Publisher` until stopped."""

    def __init__(
        self,
        publisher: Publisher,
        options: DemoOptions | None = None,
        *,
        on_end: Callable[[Ended], None] | None = None,
    ) -> None:
        self._publisher = publisher
        self.options = options or DemoOptions()
        self._rng = random.Random(self.options.seed)
        self._on_end = on_end
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = 0
        self._failing = False
        # How the most recent sessions ended, newest last (bounded: a gateway may run for months).
        self.ended: deque[Ended] = deque(maxlen=ENDED_KEPT)

    @property
    def running(self) -> int:
        """Sessions running now."""
        return len(self._tasks)

    async def run(self, duration: float | None = None) -> None:
        """Start sessions until ``duration`` seconds pass (or forever), then stop them all."""
        loop = asyncio.get_running_loop()
        deadline = None if duration is None else loop.time() + duration
        options = self.options
        try:
            # One of each type straight away, so there is something to see at once.
            for workflow_type in list(WORKFLOWS)[: options.max_sessions]:
                self._start(workflow_type)
            while deadline is None or loop.time() < deadline:
                wait = self._rng.uniform(0.5, 1.5) / options.rate if options.rate > 0 else 1.0
                if deadline is not None:
                    wait = min(wait, max(deadline - loop.time(), 0))
                await asyncio.sleep(wait)
                if options.rate > 0 and self.running < options.max_sessions:
                    self._start(self._rng.choice(list(WORKFLOWS)))
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Interrupt every running session; each reports itself ``cancelled``."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_TIMEOUT)

    def _start(self, workflow_type: str) -> None:
        plan = self._plan(workflow_type, self._started)
        self._started += 1
        task = asyncio.get_running_loop().create_task(
            self._run_session(plan), name=f"relay-demo-{plan.session_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _plan(self, workflow_type: str, number: int) -> _Plan:
        rng, options = self._rng, self.options
        safe = number < options.safe_start
        quick = number == 0
        steps = WORKFLOWS[workflow_type]
        ticks: list[tuple[str, float, str]] = []
        # Each step reports its own progress, as the origin app's workers do;
        # the plan the session declares turns it into the whole's.
        for step in steps:
            count = 1 if quick else rng.randint(1, 3)
            for tick in range(count):
                ticks.append((step.name, round(100 * (tick + 1) / count), rng.choice(step.details)))
        # The last report stops short of 100: the session's end reports that.
        name, _, details = ticks[-1]
        ticks[-1] = (name, 97, details)
        pause = options.pace[0] if quick else rng.choice(options.pace)
        fail_at = failure = cancel_at = retry_at = silent_at = silence = None
        tiles = 0
        if not safe and rng.random() < options.fail_chance:
            fail_at = rng.randrange(1, len(ticks))
            failure = self._failure(workflow_type)
        elif not safe and rng.random() < options.cancel_chance:
            cancel_at = rng.randrange(0, max(len(ticks) - 2, 1))
        elif not safe and rng.random() < options.retry_chance:
            retry_at = rng.randrange(1, len(ticks))
            failure = self._failure(workflow_type)
        elif not safe and rng.random() < options.stall_chance:
            silent_at = rng.randrange(0, len(ticks) - 1)
            silence = rng.uniform(*SILENCE) * options.stall_after
        elif not safe and rng.random() < options.hang_chance:
            silent_at = rng.randrange(0, len(ticks) - 1)
        elif not safe and workflow_type == "map" and rng.random() < options.fan_out_chance:
            tiles = rng.randint(*FAN_OUT)
            ticks = []  # the map reports no steps of its own: its tiles move its bar
        if silent_at is not None and options.stall_after > 0:
            # Without heartbeats, the worker's ordinary pauses must stay well
            # within the stall time: only its one silence should stall it.
            pause = (min(pause[0], options.stall_after / 4), min(pause[1], options.stall_after / 2))
        return _Plan(
            workflow_type=workflow_type,
            session_id=f"{workflow_type}-{rng.getrandbits(32):08x}",
            ticks=ticks,
            pause=pause,
            with_eta=safe or rng.random() < 0.75,
            fail_at=fail_at,
            failure=failure,
            cancel_at=cancel_at,
            retry_at=retry_at,
            silent_at=silent_at,
            silence=silence,
            tiles=tiles,
        )

    def _failure(self, workflow_type: str) -> Exception:
        kind, message = self._rng.choice(FAILURES[workflow_type])
        return kind(message)

    async def _run_session(self, plan: _Plan) -> None:
        rng = self._rng
        mean_pause = sum(plan.pause) / 2
        status, error = "completed", None
        heartbeats = None if plan.silent else heartbeat_interval(self.options.stall_after)
        session = self._publisher.session(
            plan.workflow_type,
            plan.session_id,
            heartbeat_interval=heartbeats,
            # A parent that fans out declares no plan: its bar is its children's.
            plan=None
            if plan.tiles
            else [(step.name, step.weight) for step in WORKFLOWS[plan.workflow_type]],
        )
        try:
            async with session:
                if plan.tiles:
                    await session.report("fanning out", 0, {"details": f"{plan.tiles} tiles"})
                    tiles = (
                        self._run_tile(session, plan, n, heartbeats) for n in range(plan.tiles)
                    )
                    await asyncio.gather(*tiles)
                for index, (step, progress, details) in enumerate(plan.ticks):
                    if index == plan.fail_at and plan.failure is not None:
                        raise plan.failure
                    if index == plan.retry_at and plan.failure is not None:
                        # The attempt failed where the worker retries: it says so and goes on.
                        await session.retry(plan.failure)
                    metadata: dict[str, Any] = {"details": details}
                    if plan.with_eta:
                        left = (len(plan.ticks) - index) * mean_pause * rng.uniform(0.8, 1.2)
                        metadata["estimated_time_remaining"] = round(left, 1)
                    await session.report(step, progress, metadata)
                    self._failing = False
                    pause = asyncio.sleep(rng.uniform(*plan.pause))
                    if index == plan.cancel_at:
                        # Someone asks for the session to stop while the worker carries on.
                        await asyncio.gather(pause, self._ask_cancel(session))
                    else:
                        await pause
                    if index == plan.silent_at:
                        await self._silence(plan.silence)
            if session.cancel_requested:
                status = "cancelled"
        except BACKEND_ERRORS as exc:
            level = logging.DEBUG if self._failing else logging.WARNING
            logger.log(level, "demo session %s could not report: %s", plan.session_id, exc)
            self._failing = True
            return
        except Exception as exc:
            if exc is not plan.failure:
                raise
            status, error = "failed", describe(exc)
        ended = Ended(plan.workflow_type, plan.session_id, status, error)
        self.ended.append(ended)
        if self._on_end is not None:
            self._on_end(ended)

    async def _run_tile(
        self,
        parent: AsyncReportingSession,
        plan: _Plan,
        number: int,
        heartbeats: float | None,
    ) -> None:
        """One child of a fanned-out map: a tile rendered in a few reports, at its own pace."""
        rng = self._rng
        child = parent.child(
            "tile",
            f"{plan.session_id}-tile-{number}",
            weight=rng.choice((1, 1, 2)),
            heartbeat_interval=heartbeats,
        )
        async with child:
            ticks = rng.randint(2, 4)
            for tick in range(ticks):
                await child.report("rendering", round(97 * (tick + 1) / ticks))
                await asyncio.sleep(rng.uniform(*plan.pause))

    @staticmethod
    async def _silence(seconds: float | None) -> None:
        """The worker says nothing for ``seconds``; for None it hangs until interrupted."""
        if seconds is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(seconds)

    async def _ask_cancel(self, session: AsyncReportingSession) -> None:
        try:
            answer = await self._publisher.request_cancel(session)
        except BACKEND_ERRORS as exc:
            logger.warning("demo: asking to cancel %s failed: %s", session.session_id, exc)
            return
        logger.debug("demo: asked to cancel %s: %s", session.session_id, answer)


async def _cancel_attempts(ask: Callable[[], Awaitable[str]]) -> str:
    """Ask until the session is known: a gateway learns of a session from the stream."""
    for _ in range(CANCEL_ATTEMPTS):
        answer = await ask()
        if answer != "unknown":
            return answer
        await asyncio.sleep(CANCEL_RETRY_PAUSE)
    return "unknown"


class RedisPublisher:
    """Simulated sessions written straight to Redis with an :class:`AsyncReporter`.

    With no gateway at hand, a cancellation is requested the way the gateway's
    cancel endpoint records one: a ``cancel_requested`` event at the session's
    current step, which also marks the cancellation pending for the worker.
    """

    def __init__(self, reporter: AsyncReporter) -> None:
        self._reporter = reporter

    def session(
        self,
        workflow_type: str,
        session_id: str,
        *,
        heartbeat_interval: float | None,
        plan: PlanSpec | None,
    ) -> AsyncReportingSession:
        return self._reporter.session(
            workflow_type,
            session_id,
            raise_on_cancel=True,
            heartbeat_interval=heartbeat_interval,
            plan=plan,
        )

    async def request_cancel(self, session: AsyncReportingSession) -> str:
        event = session.event(session.step, session.progress, status="cancel_requested")
        await self._reporter.publish(event)
        return "cancel_requested"


class _ThreadedHttpReporter:
    """An :class:`HttpReporter` (blocking) made awaitable, one per session."""

    def __init__(self, reporter: HttpReporter) -> None:
        self._reporter = reporter

    async def publish(self, event: ProgressEvent) -> Receipt:
        return await asyncio.to_thread(self._reporter.publish, event)


class HttpPublisher:
    """Simulated sessions posted to a gateway, cancelled through its cancel endpoint."""

    def __init__(
        self,
        url: str,
        http: aiohttp.ClientSession,
        *,
        api_key: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._url = url.rstrip("/")
        self._http = http
        self._api_key = api_key
        self._retry = retry or RetryPolicy(retry_for=5)

    def session(
        self,
        workflow_type: str,
        session_id: str,
        *,
        heartbeat_interval: float | None,
        plan: PlanSpec | None,
    ) -> AsyncReportingSession:
        reporter = HttpReporter(self._url, api_key=self._api_key, retry=self._retry)
        return AsyncReportingSession(
            _ThreadedHttpReporter(reporter),
            workflow_type,
            session_id,
            raise_on_cancel=True,
            heartbeat_interval=heartbeat_interval,
            plan=plan,
        )

    async def request_cancel(self, session: AsyncReportingSession) -> str:
        url = f"{self._url}/api/workflows/sessions/{session.session_id}/cancel"
        headers = {"authorization": f"Bearer {self._api_key}"} if self._api_key else {}

        async def ask() -> str:
            async with self._http.post(url, headers=headers) as response:
                if response.status == 202:
                    return "cancel_requested"
                if response.status == 404:
                    return "unknown"
                body = await response.text()
                logger.debug(
                    "cancel of %s answered %d: %s", session.session_id, response.status, body
                )
                return f"answered {response.status}"

        return await _cancel_attempts(ask)


def alongside(
    client: AsyncStore, *, prefix: str, maxlen: int, stall_after: float
) -> Callable[[web.Application], AbstractAsyncContextManager[None]]:
    """A cleanup context running the simulation while a gateway serves, as ``--demo`` asks.

    The sessions are written with an :class:`AsyncReporter` over ``client``
    (the gateway's own store connection, embedded or Redis), exactly as a
    worker beside the gateway would write them; ``stall_after`` is the
    gateway's own stall time.
    """

    @asynccontextmanager
    async def run(app: web.Application) -> AsyncIterator[None]:
        reporter = AsyncReporter(
            prefix=prefix, maxlen=maxlen, retry=RetryPolicy(retry_for=5), client=client
        )
        simulation = Simulation(RedisPublisher(reporter), DemoOptions(stall_after=stall_after))
        logger.info("demo: publishing simulated %s sessions", ", ".join(WORKFLOWS))
        task = asyncio.create_task(simulation.run(), name="relay-demo")
        yield
        task.cancel()
        await asyncio.wait([task], timeout=STOP_TIMEOUT + 1)

    return run


def describe_end(ended: Ended) -> str:
    """One line saying how a simulated session ended."""
    line = f"{ended.status:<10} {ended.workflow_type:<10} {ended.session_id}"
    return f"{line}  {ended.error}" if ended.error else line


async def run_demo(
    *,
    url: str | None = None,
    redis_url: str | None = None,
    api_key: str | None = None,
    options: DemoOptions | None = None,
    duration: float | None = None,
    on_end: Callable[[Ended], None] | None = None,
) -> Sequence[Ended]:
    """Run the simulation against a gateway (``url``) or a Redis (``redis_url``)."""
    if redis_url:
        client = await open_async_redis(
            redis_url, decode_responses=True, socket_connect_timeout=2, socket_timeout=5
        )
        async with AsyncReporter(retry=RetryPolicy(retry_for=5), client=client) as reporter:
            await client.ping()
            simulation = Simulation(RedisPublisher(reporter), options, on_end=on_end)
            await simulation.run(duration)
            return list(simulation.ended)
    if not url:
        raise ValueError("give a gateway url or a redis url")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async with http.get(url.rstrip("/") + "/healthz") as response:
            response.raise_for_status()
        publisher = HttpPublisher(url, http, api_key=api_key)
        simulation = Simulation(publisher, options, on_end=on_end)
        await simulation.run(duration)
        return list(simulation.ended)

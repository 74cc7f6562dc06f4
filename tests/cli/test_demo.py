"""``relay demo`` and ``relay serve --demo``, and the reader lag gauge they make visible."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import aiohttp
import orjson
import pytest
import redis.asyncio
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from relay.cli.demo import (
    WORKFLOWS,
    DemoOptions,
    HttpPublisher,
    RedisPublisher,
    Simulation,
    run_demo,
)
from relay.client.reporters import AsyncReporter
from relay.client.reporting_session import AsyncReportingSession
from relay.client.retry import ReportError, RetryPolicy
from relay.protocol.entries import Receipt, StreamEntry, now_ms
from relay.protocol.event import ProgressEvent
from relay.protocol.keys import Keys
from relay.protocol.liveness import heartbeat_interval
from relay.protocol.plans import PlanSpec
from relay.server.app import create_app
from relay.server.gateway import GATEWAY
from relay.server.reader import StreamReader
from relay.server.settings import Settings
from relay.server.stream_store import StreamStore
from tests.conftest import free_port
from tests.helpers import (
    Entries,
    Fields,
    Gateway,
    async_store_client,
    env_without_relay,
    eventually,
    state_when,
    until,
)

TYPES = set(WORKFLOWS)
# Quick sessions for tests: the command's own pauses are 0.3 s to 2 s.
QUICK = ((0.02, 0.05),)


async def sessions(http: aiohttp.ClientSession, base: str) -> list[dict[str, Any]]:
    async with http.get(f"{base}/api/workflows/sessions?limit=1000") as response:
        assert response.status == 200
        found: list[dict[str, Any]] = await response.json()
        return found


async def history(http: aiohttp.ClientSession, base: str, session_id: str) -> list[str]:
    async with http.get(f"{base}/api/workflows/sessions/{session_id}/events") as response:
        assert response.status == 200
        return [frame["data"]["status"] for frame in await response.json()]


async def lag_samples(http: aiohttp.ClientSession, base: str) -> dict[str, float]:
    async with http.get(f"{base}/metrics") as response:
        text = await response.text()
    return {
        sample.labels["workflow_type"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "relay_reader_lag_ms"
        for sample in family.samples
    }


@pytest.mark.slow
async def test_relay_demo_publishes_the_three_workflows_for_its_duration(
    start_gateway: Callable[..., Gateway], redis_url: str, http: aiohttp.ClientSession
) -> None:
    gateway = start_gateway(redis_url)
    demo = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay",
        "demo",
        "--url",
        gateway.url,
        "--duration",
        "6",
        "--rate",
        "3",
        "--seed",
        "7",
        "--stall-after",
        "0.5",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env_without_relay(),
    )
    out, err = await asyncio.wait_for(demo.communicate(), 30)
    assert demo.returncode == 0, err.decode()
    assert "publishing simulated sessions" in err.decode()
    assert "completed" in out.decode()
    found: list[dict[str, Any]] = []

    async def all_ended() -> bool:
        # the demo stopped every session it started: none is left running
        found[:] = await sessions(http, gateway.url)
        return {s["status"] for s in found} <= {"completed", "failed", "cancelled"}

    await until(all_ended, what="every demo session ended")
    # Maps that fan out have tiles for children, and no plan of their own.
    assert {s["workflow_type"] for s in found} - {"tile"} == TYPES
    assert len(found) > len(TYPES)
    completed = [
        s
        for s in found
        if s["status"] == "completed" and s["parent_id"] is None and not s["children_count"]
    ]
    assert completed
    assert all(s["progress"] == 100 for s in completed)
    with_eta = 0
    for state in completed:
        url = f"{gateway.url}/api/workflows/sessions/{state['session_id']}/events"
        async with http.get(url) as response:
            steps = [frame["data"] for frame in await response.json()][:-1]
        assert len(steps) >= 4
        # Each step's own progress, and the whole's from the plan the demo declares.
        assert all(0 < step["progress"] <= 100 for step in steps)
        assert all(0 < step["overall_progress"] < 100 for step in steps)
        assert steps[0]["step_count"] == len(WORKFLOWS[state["workflow_type"]])
        with_eta += all(step["metadata"].get("estimated_time_remaining", -1) >= 0 for step in steps)
    assert with_eta  # the first sessions always say how long they have left


@pytest.mark.process
def test_relay_demo_says_when_the_gateway_is_unreachable() -> None:
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", "relay", "demo", "--url", "http://127.0.0.1:9", "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env_without_relay(),
    )
    assert result.returncode == 1
    assert "cannot reach http://127.0.0.1:9" in result.stderr


@pytest.mark.process
@pytest.mark.stores
async def test_serve_demo_shows_sessions_within_seconds_and_ends_them_on_shutdown(
    redis_url: str, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    port = free_port()
    args = [sys.executable, "-m", "relay", "serve", "--port", str(port)]
    args += ["--redis-url", redis_url, "--demo"]
    gateway = Gateway(args, port, tmp_path / "gateway.log", env_without_relay())
    gateway.start()
    try:
        found: list[dict[str, Any]] = []

        async def three_types_and_a_completion() -> bool:
            found[:] = await sessions(http, gateway.url)
            types = {s["workflow_type"] for s in found}
            return types >= TYPES and any(s["status"] == "completed" for s in found)

        await until(three_types_and_a_completion, timeout=15, what="demo sessions")
        running = [s for s in found if s["status"] == "running"]
        assert any(s["metadata"].get("estimated_time_remaining") is not None for s in found)
        lag = await lag_samples(http, gateway.url)
        assert set(lag) - {"tile"} == TYPES
        assert all(value >= 0 for value in lag.values())
    finally:
        code = await asyncio.to_thread(gateway.stop)
    assert code == 0, gateway.logs()
    # sessions still running at shutdown were reported cancelled, not left hanging
    client = async_store_client(redis_url)
    try:
        last: dict[str, str] = {}
        for workflow_type in TYPES | {"tile"}:
            stream = cast(Entries, await client.xrange(f"workflow:progress:{workflow_type}"))
            for _, fields in stream:
                last[fields["session_id"]] = fields.get("status", "running")
    finally:
        await client.aclose()
    assert set(last.values()) <= {"completed", "failed", "cancelled"}, last
    for state in running:
        assert last[state["session_id"]] in {"completed", "failed", "cancelled"}


async def test_demo_setting_from_the_environment(
    start_gateway: Callable[..., Gateway], http: aiohttp.ClientSession
) -> None:
    gateway = start_gateway(RELAY_DEMO="true")  # embedded store, no Redis needed
    await until(
        lambda: _has_sessions(http, gateway.url), timeout=10, what="sessions from RELAY_DEMO"
    )
    assert "publishing demo sessions" in gateway.logs()


async def _has_sessions(http: aiohttp.ClientSession, base: str) -> bool:
    return bool(await sessions(http, base))


@asynccontextmanager
async def gateway_app(settings: Settings) -> AsyncIterator[tuple[str, Any]]:
    app = create_app(settings)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), app[GATEWAY]
    finally:
        await server.close()


async def run_until_ended(simulation: Simulation, count: int) -> None:
    task = asyncio.create_task(simulation.run())
    try:
        await eventually(lambda: len(simulation.ended) >= count, timeout=20, what="ended sessions")
    finally:
        task.cancel()
        await asyncio.wait([task])


@pytest.mark.parametrize("through", ["http", "alongside"])
async def test_cancelled_sessions_go_through_the_cancel_flow(
    redis_url: str, http: aiohttp.ClientSession, through: str
) -> None:
    options = DemoOptions(
        rate=5, max_sessions=3, fail_chance=0, cancel_chance=1, safe_start=0, pace=QUICK, seed=1
    )
    settings = Settings(redis_url=redis_url, read_block_ms=100, discovery_interval=0.1)
    async with gateway_app(settings) as (base, relay):
        beside = AsyncReporter(client=relay.connections.commands, retry=RetryPolicy(retry_for=5))
        publisher = HttpPublisher(base, http) if through == "http" else RedisPublisher(beside)
        simulation = Simulation(publisher, options)
        await run_until_ended(simulation, 3)
        for ended in list(simulation.ended)[:3]:
            assert ended.status == "cancelled"
            statuses = await history(http, base, ended.session_id)
            # asked to stop, the worker's next report learned of it, then it stopped;
            # the reports in between are delivered as cancelling
            assert statuses[-1] == "cancelled"
            assert "cancel_requested" in statuses
            asked = statuses.index("cancel_requested")
            assert asked < len(statuses) - 2
            assert set(statuses[asked:-1]) == {"cancel_requested"}


async def test_failed_sessions_report_their_error(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    options = DemoOptions(
        rate=5, max_sessions=3, fail_chance=1, cancel_chance=0, safe_start=0, pace=QUICK, seed=2
    )
    settings = Settings(redis_url=redis_url, read_block_ms=100)
    async with gateway_app(settings) as (base, _):
        simulation = Simulation(HttpPublisher(base, http), options)
        await run_until_ended(simulation, 2)
        for ended in list(simulation.ended)[:2]:
            assert ended.status == "failed"
            assert ended.error is not None
            assert ended.error.split(":")[0] in {"TimeoutError", "ValueError", "RuntimeError"}

            async def failed(session_id: str = ended.session_id) -> bool:
                async with http.get(f"{base}/api/workflows/sessions/{session_id}") as response:
                    state = await response.json() if response.status == 200 else {}
                return bool(state.get("status") == "failed")

            await until(failed, what=f"{ended.session_id} failed")
            async with http.get(f"{base}/api/workflows/sessions/{ended.session_id}") as response:
                assert (await response.json())["error"] == ended.error


@pytest.mark.stores
async def test_demo_straight_to_redis(redis_url: str) -> None:
    options = DemoOptions(
        rate=5, max_sessions=4, fail_chance=0.3, cancel_chance=0.3, pace=QUICK, seed=3
    )
    ended = await run_demo(redis_url=redis_url, options=options, duration=3)
    assert {e.workflow_type for e in ended} == TYPES
    assert any(e.status == "completed" for e in ended)
    client = async_store_client(redis_url)
    try:
        entries = cast(Entries, await client.xrange("workflow:progress:map"))
        assert entries
        assert all(orjson.loads(fields.get("metadata", "{}")) is not None for _, fields in entries)
        for cancelled in (e for e in ended if e.status == "cancelled"):
            stream = f"workflow:progress:{cancelled.workflow_type}"
            statuses = [
                fields.get("status", "running")
                for _, fields in cast(Entries, await client.xrange(stream))
                if fields["session_id"] == cancelled.session_id
            ]
            assert "cancel_requested" in statuses
            assert statuses[-1] == "cancelled"
    finally:
        await client.aclose()


class Discard:
    """A stream handler that keeps nothing: the test looks at the reader alone."""

    def __call__(self, stream_key: str, entries: list[StreamEntry], live: bool) -> None:
        """Drop the entries."""

    def forget(self, stream_key: str) -> None:
        """Nothing was derived, so nothing to drop."""

    def reset(self, stream_key: str, epoch: str) -> None:
        """Nobody subscribes, so nobody to tell."""


async def test_reader_lag_is_read_off_the_reads(redis_url: str) -> None:
    # A full batch leaves the reader as far behind as its last entry is old;
    # a short one leaves it caught up. Measuring costs no Redis call.
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        keys = Keys()
        store = StreamStore(client, keys, maxlen=1000)
        reader = StreamReader(
            store, client, Discard(), count=10, block_ms=10, discovery_interval=60
        )
        entry: Fields = {"session_id": "s", "step": "a", "progress": "1"}
        old = now_ms() - 60_000
        for n in range(15):
            await client.xadd(keys.stream("map"), entry, id=f"{old + n}-0")
        await client.xadd(keys.stream("caught-up"), entry)
        await reader._start()
        assert reader.lag_ms == {}  # not read yet: no meaningful lag

        async def read_until(condition: Callable[[], bool]) -> None:
            while not condition():
                await reader._read_once()

        await asyncio.wait_for(read_until(lambda: "map" in reader.lag_ms), timeout=10)
        assert reader.lag_ms["map"] >= now_ms() - (old + 9) - 1_000
        await asyncio.wait_for(read_until(lambda: reader.lag_ms.get("map") == 0), timeout=10)
        await asyncio.wait_for(read_until(lambda: "caught-up" in reader.lag_ms), timeout=10)
        assert reader.lag_ms == {"map": 0, "caught-up": 0}
    finally:
        await client.aclose()


# A stall time short enough for the demo's silences to show within a second or two.
STALL = 0.5


def only(**chances: float) -> DemoOptions:
    """Quick options in which every session does one thing: the chances given, all others 0."""
    none = {"fail_chance": 0.0, "cancel_chance": 0.0, "retry_chance": 0.0}
    none |= {"stall_chance": 0.0, "hang_chance": 0.0, "fan_out_chance": 0.0}
    return DemoOptions(
        rate=5,
        max_sessions=2,
        safe_start=0,
        pace=QUICK,
        seed=4,
        stall_after=STALL,
        **(none | chances),
    )


def stalling_settings(redis_url: str, *, abandon_after: float = 0) -> Settings:
    return Settings(
        redis_url=redis_url,
        read_block_ms=100,
        discovery_interval=0.1,
        stall_after=STALL,
        abandon_after=abandon_after,
    )


async def completed_history(http: aiohttp.ClientSession, base: str, session_id: str) -> list[str]:
    """The statuses of a session, once the gateway has its completion."""
    statuses: list[str] = []

    async def completed() -> bool:
        statuses[:] = await history(http, base, session_id)
        return statuses[-1:] == ["completed"]

    await until(completed, what=f"{session_id} completed")
    return statuses


@pytest.mark.parametrize("through", ["http", "alongside"])
async def test_a_silent_worker_stalls_its_session_until_it_reports_again(
    redis_url: str, http: aiohttp.ClientSession, through: str
) -> None:
    async with gateway_app(stalling_settings(redis_url)) as (base, relay):
        beside = AsyncReporter(client=relay.connections.commands, retry=RetryPolicy(retry_for=5))
        publisher = HttpPublisher(base, http) if through == "http" else RedisPublisher(beside)
        simulation = Simulation(publisher, only(stall_chance=1))
        await run_until_ended(simulation, 2)
        for ended in list(simulation.ended)[:2]:
            assert ended.status == "completed"
            statuses = await completed_history(http, base, ended.session_id)
            # stalled once, in its one silence; its next report made it running again
            assert statuses.count("stalled") == 1, statuses
            stalled = statuses.index("stalled")
            assert 0 < stalled < len(statuses) - 2
            assert statuses[stalled + 1] == "running"


async def test_a_hung_worker_stays_stalled_until_the_gateway_abandons_it(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    settings = stalling_settings(redis_url, abandon_after=STALL)
    async with gateway_app(settings) as (base, _):
        simulation = Simulation(HttpPublisher(base, http), only(hang_chance=1))
        task = asyncio.create_task(simulation.run())
        try:
            found: list[dict[str, Any]] = []

            async def two_abandoned() -> bool:
                found[:] = [s for s in await sessions(http, base) if s["status"] == "failed"]
                return len(found) >= 2

            await until(two_abandoned, timeout=20, what="sessions failed for their silence")
            assert {s["error"] for s in found} == {"worker stopped reporting"}
            assert not simulation.ended  # the workers themselves never ended them
            for state in found:
                statuses = await history(http, base, state["session_id"])
                assert statuses[-2:] == ["stalled", "failed"], statuses
        finally:
            task.cancel()
            await asyncio.wait([task])


async def test_a_failed_attempt_is_retried_then_the_session_goes_on(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    async with gateway_app(stalling_settings(redis_url)) as (base, _):
        simulation = Simulation(HttpPublisher(base, http), only(retry_chance=1))
        await run_until_ended(simulation, 2)
        for ended in list(simulation.ended)[:2]:
            assert ended.status == "completed"
            await completed_history(http, base, ended.session_id)
            url = f"{base}/api/workflows/sessions/{ended.session_id}/events"
            async with http.get(url) as response:
                events = [frame["data"] for frame in await response.json()]
            statuses = [event["status"] for event in events]
            assert statuses.count("retrying") == 1, statuses
            retried = statuses.index("retrying")
            assert 0 < retried < len(events) - 2
            retry = events[retried]
            assert retry["attempt"] == 2
            assert retry["error"].split(":")[0] in {"TimeoutError", "ValueError", "RuntimeError"}
            # the second attempt's reports carry its number, to the end
            assert {event.get("attempt") for event in events[retried:]} == {2}
            assert statuses[-1] == "completed"
            async with http.get(f"{base}/api/workflows/sessions/{ended.session_id}") as response:
                state = await response.json()
            assert state["attempt"] == 2
            assert state["last_error"] == retry["error"]


class Recording:
    """A publisher that only notes the heartbeats each session is given."""

    def __init__(self) -> None:
        self.heartbeats: dict[str, float | None] = {}

    def session(
        self,
        workflow_type: str,
        session_id: str,
        *,
        heartbeat_interval: float | None,
        plan: PlanSpec | None,
    ) -> AsyncReportingSession:
        self.heartbeats[session_id] = heartbeat_interval
        return AsyncReportingSession(Unreachable(), workflow_type, session_id)

    async def request_cancel(self, session: AsyncReportingSession) -> str:
        raise AssertionError("no session here is cancelled")


class Unreachable:
    """A reporter whose every publish fails, as a backend that is down."""

    async def publish(self, event: ProgressEvent) -> Receipt:
        raise ReportError("down")


async def test_silent_workers_send_no_heartbeats_and_the_others_keep_to_the_stall_time() -> None:
    recording = Recording()
    simulation = Simulation(recording, only(stall_chance=0.3, hang_chance=0.3))
    plans = [simulation._plan("map", number) for number in range(40)]
    for plan in plans:
        await simulation._run_session(plan)  # its first report fails: it stops there
    silent = [plan for plan in plans if plan.silent]
    hung = [plan for plan in silent if plan.silence is None]
    assert hung
    assert len(silent) > len(hung)
    assert len(plans) > len(silent)
    for plan in plans:
        expected = None if plan.silent else heartbeat_interval(STALL)
        assert recording.heartbeats[plan.session_id] == expected
    for plan in silent:
        assert plan.pause[1] <= STALL / 2  # its ordinary pauses never stall it
        if plan.silence is not None:
            assert plan.silence > STALL


@pytest.mark.parametrize("through", ["http", "alongside"])
async def test_a_map_fans_out_to_tiles_whose_reports_move_its_one_bar(
    redis_url: str, http: aiohttp.ClientSession, through: str
) -> None:
    settings = Settings(redis_url=redis_url, read_block_ms=100, discovery_interval=0.1)
    async with gateway_app(settings) as (base, relay):
        beside = AsyncReporter(client=relay.connections.commands, retry=RetryPolicy(retry_for=5))
        publisher = HttpPublisher(base, http) if through == "http" else RedisPublisher(beside)
        simulation = Simulation(publisher, only(fan_out_chance=1))
        task = asyncio.create_task(simulation.run())
        try:
            await eventually(
                lambda: any(e.workflow_type == "map" for e in simulation.ended),
                timeout=20,
                what="a map ended",
            )
        finally:
            task.cancel()
            await asyncio.wait([task])
        [parent, *_] = [e for e in simulation.ended if e.workflow_type == "map"]
        assert parent.status == "completed"
        state = await state_when(http, base, parent.session_id, status="completed")
        assert 3 <= state["children_count"] == state["children_completed"] <= 5
        assert state["plan"] is None
        tile = await state_when(http, base, state["children"][0], status="completed")
        assert (tile["workflow_type"], tile["parent_id"]) == ("tile", parent.session_id)

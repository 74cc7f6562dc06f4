"""Reporting sessions send heartbeats while their body is quiet, and stop before the end."""

from __future__ import annotations

import asyncio
import logging
import threading

import aiohttp
import pytest

from relay.client.reporters import AsyncReporter, HttpReporter, Reporter
from relay.client.reporting_session import ReportingSession, heartbeat_name
from relay.client.retry import ReportError
from relay.protocol.entries import Receipt
from relay.protocol.event import ProgressEvent
from relay.server.settings import Settings
from tests.conftest import RedisServer
from tests.helpers import eventually, serving, state_when, wait_until

BEAT = 0.05


def entries(server: RedisServer, session_id: str) -> list[dict[str, str]]:
    """The session's entries in the map stream, oldest first."""
    with server.client() as client:
        found = client.xrange("workflow:progress:map")
    return [dict(fields) for _, fields in found if fields["session_id"] == session_id]


def without_ts(fields: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in fields.items() if k != "ts"}


def beating_threads(session_id: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == heartbeat_name(session_id)]


def assert_beats_then_end(found: list[dict[str, str]], beats: int) -> None:
    """The first report, at least ``beats`` unchanged repeats with fresh ts, then the end."""
    *reports, end = found
    assert len(reports) >= 1 + beats
    assert all(without_ts(r) == without_ts(reports[0]) for r in reports)
    stamps = [int(r["ts"]) for r in reports]
    assert stamps == sorted(stamps)
    assert stamps[-1] > stamps[0]
    assert end["status"] == "completed"


def test_a_quiet_body_gets_heartbeats_and_none_after_the_end(
    redis_url: str, redis_server: RedisServer
) -> None:
    with Reporter(redis_url) as reporter:
        with reporter.session("map", "quiet", heartbeat_interval=BEAT) as session:
            session.report("analyzing", 45, {"details": "forests"})
            assert beating_threads("quiet")
            wait_until(lambda: len(entries(redis_server, "quiet")) >= 4, what="heartbeats")
        assert not beating_threads("quiet")
        found = entries(redis_server, "quiet")
    assert_beats_then_end(found, 3)
    assert found[0]["metadata"] == '{"details":"forests"}'
    assert found[-1]["status"] == "completed"


async def test_an_async_body_gets_heartbeats_and_none_after_the_end(
    redis_url: str, redis_server: RedisServer
) -> None:
    def tasks() -> list[str]:
        return [t.get_name() for t in asyncio.all_tasks() if not t.done()]

    async with AsyncReporter(redis_url) as reporter:
        async with reporter.session("map", "aquiet", heartbeat_interval=BEAT) as session:
            await session.report("analyzing", 45)
            assert heartbeat_name("aquiet") in tasks()
            await eventually(lambda: len(entries(redis_server, "aquiet")) >= 4, what="beats")
        assert heartbeat_name("aquiet") not in tasks()
    assert_beats_then_end(entries(redis_server, "aquiet"), 3)


@pytest.mark.parametrize("interval", [0, None])
def test_heartbeats_may_be_turned_off(redis_url: str, interval: float | None) -> None:
    with (
        Reporter(redis_url) as reporter,
        reporter.session("map", "off", heartbeat_interval=interval) as session,
    ):
        session.report("analyzing", 1)
        assert not beating_threads("off")


def test_a_negative_interval_is_refused(redis_url: str) -> None:
    with Reporter(redis_url) as reporter, pytest.raises(ValueError, match="negative"):
        reporter.session("map", "neg", heartbeat_interval=-1)


def test_a_cancel_a_heartbeat_hears_makes_the_next_report_raise(
    redis_url: str, redis_server: RedisServer
) -> None:
    steps = []
    with (
        Reporter(redis_url) as reporter,
        Reporter(redis_url) as canceller,
        reporter.session("map", "stopme", raise_on_cancel=True, heartbeat_interval=BEAT) as session,
    ):
        session.report("analyzing", 10)
        canceller.report("stopme", "map", "analyzing", 10, status="cancel_requested")
        wait_until(lambda: session.cancel_requested, what="a heartbeat to hear the cancel")
        steps.append("heard")
        session.report("rendering", 20)
        steps.append("not stopped")
    assert steps == ["heard"]
    assert entries(redis_server, "stopme")[-1]["status"] == "cancelled"


async def test_an_http_session_beats_and_hears_a_cancel_through_a_gateway(
    redis_url: str, redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    quiet = threading.Event()

    def worker() -> list[str]:
        steps = []
        with HttpReporter(base).session(
            "map", "viahttp", raise_on_cancel=True, heartbeat_interval=BEAT
        ) as session:
            session.report("analyzing", 10)
            quiet.set()
            wait_until(lambda: session.cancel_requested, what="a heartbeat to hear the cancel")
            steps.append("heard")
            session.report("rendering", 20)
            steps.append("not stopped")
        return steps

    async with serving(Settings(redis_url=redis_url, read_block_ms=100)) as base:
        running = asyncio.create_task(asyncio.to_thread(worker))
        await asyncio.to_thread(quiet.wait, 10)
        await eventually(lambda: len(entries(redis_server, "viahttp")) >= 3, what="heartbeats")
        async with http.post(f"{base}/api/workflows/sessions/viahttp/cancel") as answer:
            assert answer.status == 202
        assert await asyncio.wait_for(running, 10) == ["heard"]
        await state_when(http, base, "viahttp", status="cancelled")
    # Heartbeats after the request hear it; the body's next report is the last before the end.
    found = [(f["status"], f["step"]) for f in entries(redis_server, "viahttp")]
    asked = found.index(("cancel_requested", "analyzing"))
    assert asked >= 3
    assert found[:asked] == [("running", "analyzing")] * asked
    *beats, last, end = found[asked + 1 :]
    assert beats == [("running", "analyzing")] * len(beats)
    assert beats
    assert (last, end) == (("running", "rendering"), ("cancelled", "rendering"))


class Flaky:
    """A publisher whose publishes fail while ``failing``; counts the failures."""

    def __init__(self, reporter: Reporter, exc: Exception) -> None:
        self._reporter = reporter
        self._exc = exc
        self.failing = False
        self.failures = 0

    def publish(self, event: ProgressEvent) -> Receipt:
        if self.failing:
            self.failures += 1
            raise self._exc
        return self._reporter.publish(event)


@pytest.mark.parametrize("exc", [ReportError("Redis unreachable"), RuntimeError("bug")])
def test_failed_heartbeats_do_not_reach_the_body_and_are_retried(
    redis_url: str,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
    exc: Exception,
) -> None:
    caplog.set_level(logging.WARNING, logger="relay.client.reporting_session")
    with Reporter(redis_url) as reporter:
        flaky = Flaky(reporter, exc)
        with ReportingSession(flaky, "map", "flaky", heartbeat_interval=BEAT) as session:
            session.report("analyzing", 10)
            flaky.failing = True
            wait_until(lambda: flaky.failures >= 2, what="two failed heartbeats")
            flaky.failing = False
            wait_until(lambda: len(entries(redis_server, "flaky")) >= 2, what="a heartbeat")
            session.report("rendering", 50)
    found = entries(redis_server, "flaky")
    assert [f["step"] for f in found[-2:]] == ["rendering", "rendering"]
    assert found[-1]["status"] == "completed"
    assert f"heartbeat of session flaky failed: {exc}" in caplog.text


def test_a_heartbeat_never_repeats_a_report_after_a_newer_one(
    redis_url: str, redis_server: RedisServer
) -> None:
    """Reports made while heartbeats run are never followed by a repeat of an older one."""
    with (
        Reporter(redis_url) as reporter,
        reporter.session("map", "race", heartbeat_interval=0.0005) as session,
    ):
        for n in range(501):
            session.report("analyzing", n / 5)
    progress = [float(f["progress"]) for f in entries(redis_server, "race")]
    assert progress == sorted(progress)
    assert progress[-1] == 100

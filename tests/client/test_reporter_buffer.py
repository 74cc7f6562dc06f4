"""The HTTP reporter's buffer: sent within the gateway's limits, never held up by a refusal."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable

import pytest

from relay.client.reporters import HttpReporter, Reporter
from relay.client.retry import Parcel, PendingBuffer, ReportError, RetryPolicy
from relay.protocol.event import ProgressEvent
from tests.conftest import RedisServer
from tests.helpers import Gateway

STREAM = "workflow:progress:map"
# One try per report: the gateway is down, so each report is buffered at once.
AT_ONCE = RetryPolicy(retry_for=0, buffer_size=2_000)


def steps(server: RedisServer) -> list[str]:
    with server.client() as client:
        return [fields["step"] for _, fields in client.xrange(STREAM)]


def refusals(gateway: Gateway) -> list[str]:
    """The gateway's counts of refused requests, from its metrics."""
    with urllib.request.urlopen(f"{gateway.url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return [line for line in text.splitlines() if line.startswith("relay_requests_rejected_total")]


def buffer_while_down(
    reporter: HttpReporter, gateway: Gateway, reports: list[dict[str, str]]
) -> None:
    gateway.stop()
    for report in reports:
        with pytest.raises(ReportError, match="unreachable"):
            reporter.report(report["session_id"], "map", report["step"], 1)
    assert len(reporter.pending) == len(reports)


@pytest.mark.slow
def test_a_thousand_buffered_reports_go_out_in_batches_the_gateway_takes(
    start_gateway: Callable[..., Gateway], redis_url: str, redis_server: RedisServer
) -> None:
    gateway = start_gateway(redis_url)
    reporter = HttpReporter(gateway.url, retry=AT_ONCE)
    buffered = [{"session_id": f"s{n % 10}", "step": f"b{n}"} for n in range(1_000)]
    buffer_while_down(reporter, gateway, buffered)
    gateway.start()
    reporter.report("s1", "map", "back", 50)
    assert len(reporter.pending) == 0
    assert steps(redis_server) == [f"b{n}" for n in range(1_000)] + ["back"]
    assert refusals(gateway) == []  # sent within the limits, not cut down after a 413
    assert reporter.report("s1", "map", "after", 60)
    assert reporter.pending.refused == {}


def test_large_buffered_events_go_out_within_the_body_limit(
    start_gateway: Callable[..., Gateway], redis_url: str, redis_server: RedisServer
) -> None:
    gateway = start_gateway(redis_url)
    reporter = HttpReporter(gateway.url, retry=AT_ONCE)
    gateway.stop()
    padding = {"pad": "x" * 15_000}
    for n in range(70):  # about 1.05 MB together, over the 1 MiB a request may carry
        with pytest.raises(ReportError):
            reporter.report(f"s{n}", "map", f"b{n}", 1, padding)
    gateway.start()
    reporter.report("s1", "map", "back", 50)
    assert steps(redis_server) == [f"b{n}" for n in range(70)] + ["back"]
    assert refusals(gateway) == []
    assert reporter.pending.refused == {}


def test_limits_the_reporter_is_told(
    start_gateway: Callable[..., Gateway], redis_url: str, redis_server: RedisServer
) -> None:
    gateway = start_gateway(redis_url, RELAY_MAX_BATCH="10")
    reporter = HttpReporter(gateway.url, retry=AT_ONCE, max_batch=10)
    buffer_while_down(reporter, gateway, [{"session_id": "s1", "step": f"b{n}"} for n in range(25)])
    gateway.start()
    reporter.report("s1", "map", "back", 50)
    assert steps(redis_server) == [f"b{n}" for n in range(25)] + ["back"]
    assert refusals(gateway) == []


def test_buffered_events_of_a_session_ended_meanwhile_are_dropped_and_counted(
    start_gateway: Callable[..., Gateway], redis_url: str, redis_server: RedisServer
) -> None:
    gateway = start_gateway(redis_url)
    reporter = HttpReporter(gateway.url, retry=AT_ONCE)
    buffered = [
        {"session_id": "ended", "step": "e1"},
        {"session_id": "alive", "step": "a1"},
        {"session_id": "ended", "step": "e2"},
        {"session_id": "alive", "step": "a2"},
    ]
    buffer_while_down(reporter, gateway, buffered)
    with Reporter(redis_url) as other:  # another publisher ends the session meanwhile
        other.report("ended", "map", "done", 100, status="completed")
    gateway.start()
    reporter.report("alive", "map", "a3", 50)
    assert steps(redis_server) == ["done", "a1", "a2", "a3"]
    assert reporter.pending.refused == {"session_ended": 2}
    assert len(reporter.pending) == 0
    reporter.report("alive", "map", "a4", 60)  # nothing is held up
    with pytest.raises(ReportError, match="409"):
        reporter.report("ended", "map", "late", 70)  # a report's own refusal is raised
    assert steps(redis_server)[-1] == "a4"
    assert len(reporter.pending) == 0


def test_an_overflowing_buffer_drops_a_group_that_may_have_been_written_whole() -> None:
    def events(first: int, count: int) -> list[ProgressEvent]:
        return [
            ProgressEvent(session_id="s1", workflow_type="map", step=f"e{n}", progress=1)
            for n in range(first, first + count)
        ]

    buffer = PendingBuffer(4)
    sealed = Parcel(events(0, 3), sealed=True)
    buffer.keep([sealed, Parcel(events(3, 2))])
    # Cut short and sent again, it could be written a second time: all or nothing.
    assert [e.step for p in buffer.take() for e in p.events] == ["e3", "e4"]
    assert buffer.dropped == 3
    buffer.keep([Parcel(events(5, 3)), Parcel(events(8, 2))])
    assert [e.step for p in buffer.take() for e in p.events] == ["e6", "e7", "e8", "e9"]
    assert buffer.dropped == 4

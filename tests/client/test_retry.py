"""Reporters ride out outages: backoff, a bounded buffer, pending events sent first."""

from __future__ import annotations

import pytest

from relay.client.reporters import Reporter
from relay.client.retry import (
    Parcel,
    PendingBuffer,
    ReportError,
    RetryPolicy,
    TransientError,
    send_with_retry,
)
from relay.protocol.event import ProgressEvent
from tests.conftest import RedisServer


def make(n: int) -> ProgressEvent:
    return ProgressEvent(session_id="s1", workflow_type="map", step=f"step{n}", progress=n)


class FlakyTarget:
    """Fails the first ``failures`` sends, then accepts and records everything."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.received: list[list[str]] = []

    def send(self, parcels: list[Parcel]) -> list[list[str]]:
        if self.failures > 0:
            self.failures -= 1
            raise TransientError("down")
        self.received.append([e.step for parcel in parcels for e in parcel.events])
        return [[f"id-{e.step}" for e in parcel.events] for parcel in parcels]


def test_transient_failures_are_retried_within_the_budget() -> None:
    target = FlakyTarget(failures=3)
    buffer = PendingBuffer(10)
    answers = send_with_retry(target.send, [make(1)], RetryPolicy(retry_for=5), buffer)
    assert answers == ["id-step1"]
    assert target.received == [["step1"]]


def test_giving_up_keeps_the_event_and_sends_it_first_next_time() -> None:
    target = FlakyTarget(failures=1000)
    buffer = PendingBuffer(10)
    policy = RetryPolicy(retry_for=0.2)
    with pytest.raises(ReportError, match="1 event"):
        send_with_retry(target.send, [make(1)], policy, buffer)
    assert len(buffer) == 1
    target.failures = 0
    assert send_with_retry(target.send, [make(2)], policy, buffer) == ["id-step2"]
    assert target.received == [["step1", "step2"]]
    assert len(buffer) == 0


def test_the_buffer_is_bounded_and_drops_the_oldest() -> None:
    target = FlakyTarget(failures=1000)
    buffer = PendingBuffer(2)
    policy = RetryPolicy(retry_for=0)
    for n in range(4):
        with pytest.raises(ReportError):
            send_with_retry(target.send, [make(n)], policy, buffer)
    assert len(buffer) == 2
    assert buffer.dropped == 2
    target.failures = 0
    send_with_retry(target.send, [make(9)], policy, buffer)
    assert target.received == [["step2", "step3", "step9"]]


def test_reporter_survives_a_redis_outage_without_losing_the_report(
    own_redis: RedisServer,
) -> None:
    own_redis.stop()
    own_redis.start(appendonly=True)
    with Reporter(own_redis.url, retry=RetryPolicy(retry_for=0.5)) as reporter:
        reporter.report("s1", "map", "before", 10)
        own_redis.stop()
        with pytest.raises(ReportError, match="Redis unreachable"):
            reporter.report("s1", "map", "during", 20)
        own_redis.start(appendonly=True)
        last = reporter.report("s1", "map", "after", 30)
    with own_redis.client() as client:
        entries = client.xrange("workflow:progress:map")
    assert [fields["step"] for _, fields in entries] == ["before", "during", "after"]
    assert entries[-1][0] == last

"""``relay watch`` estimates with what the gateway learned, so its ETA is the gateway's."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import pytest

from relay.cli.watch import ProgressBoard, SessionStart, running_starts
from relay.client.subscriber import Connection
from relay.protocol.event import ProgressEvent
from relay.protocol.plans import POSITION_FIELDS, PlanPosition, position_in
from tests.cli.test_watch import Clock, reported
from tests.e2e.test_step_durations import (
    STEPS_LEARNED,
    cast_halfway,
    learned_gateway,
    rule_at_cast_halfway,
)
from tests.helpers import Gateway, state_when

T0 = 1_700_000_000_000


def test_a_row_with_the_gateways_figures_estimates_by_its_steps() -> None:
    board = ProgressBoard(clock=Clock())
    board.set_connection(Connection("live"))
    at_cast = reported("s1", 50, step="cast", ts=T0 + 5_000, workflow_type="forge")
    board.update(at_cast, PlanPosition(2, 3, 50.0))
    steps = (3.0, 15.0, 4.0)
    board.learn_starts({"s1": SessionStart(T0, 0, 22.0, steps)})
    row = board.get("s1")
    assert row is not None
    expected = rule_at_cast_halfway(T0, typical_duration=22.0, typical_step_durations=steps)
    assert board.remaining(row) == expected
    # A plan declared since may list other steps: the type's figure is used then.
    replanned = reported(
        "s1", 60, step="cast", ts=T0 + 6_000, workflow_type="forge", plan=[{"step": "cast"}]
    )
    board.update(replanned, PlanPosition(1, 1, 60.0))
    assert row.typical_step_durations is None
    assert row.typical_duration == 22.0


def test_a_row_whose_steps_are_unknown_estimates_by_the_rate() -> None:
    board = ProgressBoard(clock=Clock())
    board.update(reported("s1", 40, ts=T0 + 4_000), PlanPosition(1, 2, 20.0))
    board.learn_starts({"s1": SessionStart(T0, 0, None, (None, None))})
    row = board.get("s1")
    assert row is not None
    assert board.remaining(row) == pytest.approx(16.0)  # the rate alone: 20 % in 4 s


async def test_watch_shows_the_gateways_learned_estimate(
    start_gateway: Callable[..., Gateway], redis_url: str, http: aiohttp.ClientSession
) -> None:
    gateway, post, now = await learned_gateway(start_gateway, redis_url, http)
    await cast_halfway(post, now)
    state = await state_when(
        http, gateway.url, "fresh", step="cast", typical_step_durations=STEPS_LEARNED
    )
    starts = await running_starts(http, gateway.url, "forge")
    assert starts["fresh"].typical_step_durations == tuple(STEPS_LEARNED)
    # The board takes the session's events as delivered, then the answer.
    board = ProgressBoard(clock=Clock())
    async with http.get(f"{gateway.url}/api/workflows/sessions/fresh/events") as response:
        history = await response.json()
    for item in history:
        data = item["data"]
        reported_data = {k: v for k, v in data.items() if k not in POSITION_FIELDS}
        board.update(ProgressEvent.model_validate(reported_data), position_in(data))
    board.learn_starts(starts)
    row = board.get("fresh")
    assert row is not None
    assert state["estimated_time_remaining"] is not None
    assert board.remaining(row) == state["estimated_time_remaining"]

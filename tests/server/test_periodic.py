"""The gateway's periodic tasks outlive a failing run."""

from __future__ import annotations

import logging

import pytest

from relay.server.app import periodically
from tests.helpers import eventually


async def test_a_failing_run_is_logged_and_the_next_one_goes_ahead(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[int] = []

    async def action() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("a bug in one run")

    with caplog.at_level(logging.ERROR, logger="relay.server.app"):
        async with periodically(0.01, action, "test-task"):
            await eventually(lambda: len(runs) >= 3, what="runs after the failure")
    assert "test-task failed" in caplog.text
    assert "a bug in one run" in caplog.text

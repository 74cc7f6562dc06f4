"""The origin app's worker, unchanged: ``requests.post`` of the plain body, never a status.

Its sessions must end in the dashboard by themselves: one that reached 100 % and went
quiet is completed (inferred), one whose worker died midway is stalled and then, with
``RELAY_ABANDON_AFTER``, failed; neither keeps offering Cancel or a running clock.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser import get_json
from tests.helpers import Gateway

# The worker as the origin app wrote it: per-step progress, no status, no reporter.
WORKER = """
import sys
import requests

url, session_id, stop_at = sys.argv[1], sys.argv[2], float(sys.argv[3])
for step in ("analyzing", "generating", "rendering"):
    for progress in (10, 50, 100):
        if step == "rendering" and progress > stop_at:
            sys.exit(0)  # the worker died here and never said so
        body = {
            "session_id": session_id,
            "workflow_type": "map",
            "step": step,
            "progress": progress,
            "metadata": {"details": step + " the map"},
        }
        requests.post(url + "/api/workflows/progress", json=body, timeout=10).raise_for_status()
"""

LIVENESS = {"RELAY_STALL_AFTER": "1", "RELAY_ABANDON_AFTER": "1"}


@pytest.fixture
def gateway(start_gateway: Callable[..., Gateway], redis_url: str) -> Gateway:
    return start_gateway(redis_url, **LIVENESS)


def run_worker(tmp_path: Path, gateway: Gateway, session_id: str, stop_at: float) -> None:
    script = tmp_path / "origin_worker.py"
    script.write_text(WORKER)
    subprocess.run(
        [sys.executable, str(script), gateway.url, session_id, str(stop_at)],
        check=True,
        timeout=60,
    )


def test_the_origin_workers_sessions_end_in_the_dashboard_without_a_change(
    page: Page, gateway: Gateway, tmp_path: Path
) -> None:
    page.goto(gateway.url)
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")

    run_worker(tmp_path, gateway, "finished", stop_at=100)
    finished = page.locator('[data-session="finished"]')
    expect(finished.locator(".status")).to_have_text("completed", timeout=15_000)
    expect(finished.locator(".cancel")).to_be_hidden()
    expect(finished.locator(".elapsed")).to_contain_text("took")

    run_worker(tmp_path, gateway, "crashed", stop_at=45)
    crashed = page.locator('[data-session="crashed"]')
    expect(crashed.locator(".bar")).to_have_attribute("aria-valuenow", "10")
    expect(crashed.locator(".status")).to_have_text("failed", timeout=15_000)
    expect(crashed.locator(".cancel")).to_be_hidden()
    expect(crashed.locator(".elapsed")).to_contain_text("took")

    done = get_json(f"{gateway.url}/api/workflows/sessions/finished")
    assert (done["status"], done["progress"], done["estimated_time_remaining"]) == (
        "completed",
        100,
        0,
    )
    assert done["metadata"]["inferred"] is True
    dead = get_json(f"{gateway.url}/api/workflows/sessions/crashed")
    assert dead["status"] == "failed"
    assert "stopped reporting" in dead["error"]
    history = get_json(f"{gateway.url}/api/workflows/sessions/crashed/events")
    statuses = [item["data"]["status"] for item in history]
    assert statuses[-2:] == ["stalled", "failed"]

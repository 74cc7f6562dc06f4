"""The browser client applies the gateway's rules: same constants, same time remaining."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from relay.protocol.event import TERMINAL_STATUSES
from relay.protocol.frames import ANY_TYPE
from relay.protocol.progress import ETA_METADATA_KEY, estimated_time_remaining
from relay.server.settings import Settings
from relay.server.static_files import CLIENT
from tests.browser import CHROMIUM, CHROMIUM_ARGS, get_json, load_client, post_json
from tests.helpers import Gateway

try:
    from playwright.sync_api import Page, sync_playwright
except ImportError:  # run_client says what is missing
    sync_playwright = None  # type: ignore[assignment]

NOW = 1_700_000_000_000

STATUSES = ("running", "cancel_requested", "completed", "failed", "cancelled")
METADATA: tuple[dict[str, Any], ...] = (
    {},
    {"details": "forests"},
    {ETA_METADATA_KEY: 42},
    {ETA_METADATA_KEY: 0},
    {ETA_METADATA_KEY: 12.75},
    {ETA_METADATA_KEY: -1},
    {ETA_METADATA_KEY: True},
    {ETA_METADATA_KEY: "5"},
    {ETA_METADATA_KEY: None},
)
# (first progress, latest progress, ms from the first event to the latest)
POINTS = (
    (0, 40, 4000),  # 6 s left
    (10, 10, 5000),  # no progress made
    (10, 30, 0),  # no time passed
    (50, 40, 1000),  # progress went back
    (12.5, 33.3, 7777),
    (0, 100, 1000),  # at 100 and still running
    (1, 2, 1),
    (0, 0.1, 86_400_000),
    (3, 99.9999, 123_456),
    (0, 80, 2),  # 0.5 ms left: halves round up
    (0, 80, 6),  # 1.5 ms
    (33.333, 66.667, 1_000_003),
)


# Seconds sessions of the type typically take: unknown, not positive, shorter
# and longer than some points' elapsed time, and awkward fractions.
TYPICAL = (None, 0, -5, 3, 10, 12.345, 0.001, 100_000.5)

# (typical seconds per step of the plan, current step's index, its own progress):
# no plan, every step known, only the current and later ones known, a later one
# unknown, one not positive, an index past the plan, awkward fractions.
STEPS: tuple[tuple[list[float | None] | None, int | None, float], ...] = (
    (None, None, 0),
    ([2, 3, 5], 2, 50),
    ([None, 3, 5], 2, 25),
    ([2, None, 5], 1, 0),
    ([2, 0, 5], 1, 10),
    ([2, 3, 5], 4, 0),
    ([2, 3, 5], None, 50),
    ([0.001, 12.345, 7.7], 3, 33.3),
)


def eta_cases() -> list[dict[str, Any]]:
    """Every status, metadata and point, with every typical duration and per-step figures."""
    return [
        {
            "status": status,
            "progress": progress,
            "metadata": metadata,
            "first_progress": first,
            "started_at": NOW,
            "updated_at": NOW + elapsed,
            "typical_duration": typical,
            "typical_step_durations": step_durations,
            "step_index": step_index,
            "step_progress": step_progress,
        }
        for status in STATUSES
        for metadata in METADATA
        for first, progress, elapsed in POINTS
        for typical in TYPICAL
        for step_durations, step_index, step_progress in STEPS
    ]


def run_client(tmp_path: Path, body: str, data: Any = None) -> Any:
    """What ``body``, the body of an async JavaScript function, returns.

    It sees the client module as ``client`` and ``data`` as given. It runs
    under node when node is on PATH, else in headless Chromium.
    """
    node = shutil.which("node")
    if node:
        module = tmp_path / "relay-client.mjs"  # .mjs: node loads it as an ES module
        shutil.copyfile(CLIENT, module)
        script = (
            'import { readFileSync } from "node:fs";\n'
            f"import * as client from {json.dumps(module.as_uri())};\n"
            'const data = JSON.parse(readFileSync(0, "utf8"));\n'
            f"const result = await (async (client, data) => {{ {body} }})(client, data);\n"
            "process.stdout.write(JSON.stringify(result));\n"
        )
        result = subprocess.run(
            [node, "--input-type=module", "-e", script],
            input=json.dumps(data),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)
    if CHROMIUM is None or sync_playwright is None:
        pytest.fail("running the browser client needs node, or chromium and playwright")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            return launched.new_page().evaluate(
                """async ([source, body, data]) => {
                    const blob = new Blob([source], { type: "text/javascript" });
                    const client = await import(URL.createObjectURL(blob));
                    const wrapped = `return (async () => { ${body} })();`;
                    const run = new Function("client", "data", wrapped);
                    return await run(client, data);
                }""",
                [CLIENT.read_text(encoding="utf-8"), body, data],
            )
        finally:
            launched.close()


@pytest.mark.browser
def test_client_constants_are_the_gateways(tmp_path: Path) -> None:
    constants = run_client(
        tmp_path,
        "return { any: client.ANY_TYPE, terminal: client.TERMINAL_STATUSES,"
        " eta: client.ETA_METADATA_KEY, perSocket: client.WATCHERS_PER_SOCKET };",
    )
    assert constants["any"] == ANY_TYPE
    assert sorted(constants["terminal"]) == sorted(TERMINAL_STATUSES)
    assert constants["eta"] == ETA_METADATA_KEY
    # A shared socket's subscriptions fit the gateway's default limit, and what
    # a reconnect sends at once (an auth frame, a subscribe per watcher) its burst.
    defaults = Settings.model_fields
    assert constants["perSocket"] <= defaults["max_subscriptions"].default
    assert constants["perSocket"] + 1 <= defaults["ws_burst"].default


@pytest.mark.browser
def test_client_time_remaining_is_the_gateways_on_every_case(tmp_path: Path) -> None:
    cases = eta_cases()
    expected = [estimated_time_remaining(**case) for case in cases]
    got = run_client(
        tmp_path,
        """return data.map((c) => client.estimatedTimeRemaining({
            status: c.status, progress: c.progress, metadata: c.metadata,
            firstProgress: c.first_progress, startedAt: c.started_at, updatedAt: c.updated_at,
            typicalDuration: c.typical_duration, typicalStepDurations: c.typical_step_durations,
            stepIndex: c.step_index, stepProgress: c.step_progress,
        }));""",
        cases,
    )
    mismatches = [
        (case, want, have)
        for case, want, have in zip(cases, expected, got, strict=True)
        if want != have
    ]
    assert not mismatches, mismatches[:5]
    # The table reaches every branch of the rule.
    assert {0.0, None, 42.0, 12.75, 6.0, 0.001, 0.002} <= set(expected)
    # And every branch with a typical duration: not moved yet (5 s of 10 gone),
    # overdue (5 s of 3), and blended with the rate (differing from it).
    found = dict(zip((json.dumps(case, sort_keys=True) for case in cases), expected, strict=True))

    def running(
        first: float, progress: float, elapsed: int, typical: float | None, steps: int = 0
    ) -> float | None:
        case = {**cases[0], "status": "running", "metadata": {}, "first_progress": first}
        case.update(progress=progress, updated_at=NOW + elapsed, typical_duration=typical)
        durations, index, step_progress = STEPS[steps]
        case.update(typical_step_durations=durations, step_index=index, step_progress=step_progress)
        return found[json.dumps(case, sort_keys=True)]

    assert running(10, 10, 5000, 10) == 5.0
    assert running(10, 10, 5000, 3) is None
    assert running(0, 40, 4000, 3) not in (None, 6.0)  # 3 s typical: 1.8 s of it left
    # Per step: half of 3 s and 5 s (6.5 s) less 5 s elapsed before moving; blended
    # after, unlike the type's figure; the type's whenever a step still to run is unknown.
    assert running(10, 10, 5000, None, steps=1) == 1.5
    assert running(10, 10, 5000, 10, steps=2) == 2.25  # 3 s * 0.75 + 5 s, less 5 s
    assert running(0, 40, 4000, 3, steps=1) not in (None, 6.0, running(0, 40, 4000, 3))
    for fallback in (3, 4, 5, 6):
        assert running(0, 40, 4000, 3, steps=fallback) == running(0, 40, 4000, 3)


def test_a_completed_session_has_nothing_left_whatever_it_reported() -> None:
    case: dict[str, Any] = {
        "status": "completed",
        "progress": 100,
        "metadata": {ETA_METADATA_KEY: 30},
        "first_progress": 0,
        "started_at": NOW,
        "updated_at": NOW + 1000,
    }
    assert estimated_time_remaining(**case) == 0.0


Report = Callable[..., None]


def aged_reports(gateway: Gateway, session_id: str) -> tuple[int, Report]:
    """When a session started (a minute ago), and ``report(step, progress, at, **fields)``.

    Each report is stamped ``at`` milliseconds after the start, so rates are the test's own.
    """
    started = int(time.time() * 1000) - 60_000
    publish = f"{gateway.url}/api/workflows/progress"

    def report(step: str, progress: float, at: int, **fields: Any) -> None:
        event = {"session_id": session_id, "workflow_type": "map", "step": step}
        post_json(publish, {**event, "progress": progress, "ts": started + at, **fields})

    return started, report


def watch_in(tab: Page, gateway: Gateway, session_id: str) -> None:
    """Load the client in ``tab`` and watch one session as ``window.watcher``."""
    load_client(tab, gateway)
    tab.evaluate(
        """([url, sessionId]) => {
            window.watcher = relay.watchWorkflow({ url, workflowType: "map", sessionId });
        }""",
        [gateway.url, session_id],
    )


@pytest.mark.browser
def test_client_measures_the_rate_from_the_gateways_first_point(
    request: pytest.FixtureRequest, start_gateway: Callable[..., Gateway], redis_url: str
) -> None:
    tab: Page = request.getfixturevalue("page")
    gateway = start_gateway(redis_url)
    started, report = aged_reports(gateway, "r1")
    report("s", 10, 0)
    # The latest event gives the worker's own figure, which says nothing of the rate.
    report("s", 30, 20_000, metadata={ETA_METADATA_KEY: 99})
    state = get_json(f"{gateway.url}/api/workflows/sessions/r1")
    assert (state["first_progress"], state["started_at"]) == (10, started)
    watch_in(tab, gateway, "r1")
    tab.wait_for_function("watcher.get()?.estimatedTimeRemaining === 99")
    report("s", 50, 40_000)  # no figure now: the rate since the first event, 40 points in 40 s
    tab.wait_for_function("watcher.get()?.progress === 50")
    eta = tab.evaluate("watcher.get().estimatedTimeRemaining")
    server = get_json(f"{gateway.url}/api/workflows/sessions/r1")["estimated_time_remaining"]
    assert eta == server == 50.0


@pytest.mark.browser
def test_client_shows_the_gateways_overall_figures_and_measures_the_rate_on_them(
    request: pytest.FixtureRequest, start_gateway: Callable[..., Gateway], redis_url: str
) -> None:
    tab: Page = request.getfixturevalue("page")
    gateway = start_gateway(redis_url)
    _, report = aged_reports(gateway, "p1")
    plan = [{"step": "analyzing", "weight": 1}, {"step": "generating", "weight": 3}]
    report("analyzing", 0, 0, plan=plan)
    report("analyzing", 100, 10_000)
    watch_in(tab, gateway, "p1")
    # 25% of the whole in 10 s, measured from the first point the HTTP state gives.
    tab.wait_for_function("watcher.get()?.overallProgress === 25")
    tab.wait_for_function("watcher.get()?.estimatedTimeRemaining === 30")
    report("generating", 50, 25_000)  # live: (1 + 3 * 0.5) / 4 = 62.5% in 25 s
    tab.wait_for_function("watcher.get()?.progress === 50")
    state = tab.evaluate(
        "(({ overallProgress, stepIndex, stepCount, estimatedTimeRemaining }) =>"
        " ({ overallProgress, stepIndex, stepCount, estimatedTimeRemaining }))(watcher.get())"
    )
    server = get_json(f"{gateway.url}/api/workflows/sessions/p1")
    assert state == {
        "overallProgress": server["overall_progress"],
        "stepIndex": server["step_index"],
        "stepCount": server["step_count"],
        "estimatedTimeRemaining": server["estimated_time_remaining"],
    }
    assert state == {
        "overallProgress": 62.5,
        "stepIndex": 2,
        "stepCount": 2,
        "estimatedTimeRemaining": 15.0,
    }

"""The dashboard and the browser client, in a real headless Chromium against real gateways."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path

import pytest
import redis
from playwright.sync_api import Page, WebSocket, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from relay.client.reporters import Reporter
from relay.server.auth import mint_token
from tests.browser import get_json, load_client, post_json
from tests.conftest import RedisServer
from tests.helpers import Gateway, wait_until

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
SECRET = "a-secret-long-enough-for-hs256-signing"


@pytest.fixture
def gateway(start_gateway: Callable[..., Gateway], redis_url: str) -> Gateway:
    return start_gateway(redis_url)


@pytest.fixture
def reporter(redis_url: str) -> Iterator[Reporter]:
    with Reporter(redis_url) as publisher:
        yield publisher


def open_dashboard(page: Page, gateway: Gateway, query: str = "") -> None:
    page.goto(f"{gateway.url}/{query}")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")


def publish_aged(
    redis_url: str,
    events: Sequence[tuple[str, str, str, float, float, Mapping[str, str]]],
) -> None:
    """XADD each (type, session, step, progress, age in s, extra fields) as sent that long ago."""
    now = int(time.time() * 1000)
    with redis.Redis.from_url(redis_url) as raw:
        for wtype, session_id, step, progress, age, extra in events:
            fields = {
                "session_id": session_id,
                "step": step,
                "progress": progress,
                "ts": now - int(age * 1000),
                **extra,
            }
            raw.xadd(f"workflow:progress:{wtype}", fields)


def session_exists(gateway: Gateway, session_id: str) -> bool:
    try:
        get_json(f"{gateway.url}/api/workflows/sessions/{session_id}")
    except urllib.error.HTTPError:
        return False
    return True


def test_dashboard_bar_follows_the_reported_progress_and_cancels(
    page: Page, gateway: Gateway, reporter: Reporter
) -> None:
    reporter.report("old", "map", "done", 100, status="completed")
    open_dashboard(page, gateway)
    # Ended sessions are not in the snapshot; the page loads them over HTTP.
    expect(page.locator('[data-session="old"] .status')).to_have_text("completed")

    reporter.report("s1", "map", "analyzing", 45, {"details": "forests"})
    row = page.locator('[data-session="s1"]')
    expect(row.locator(".bar")).to_have_attribute("aria-valuenow", "45")
    expect(row.locator(".step")).to_have_text("analyzing")
    reporter.report("s1", "map", "texturing", 80)
    expect(row.locator(".bar")).to_have_attribute("aria-valuenow", "80")
    expect(row.locator(".bar .fill")).to_have_attribute("style", re.compile(r"width: 80%"))
    expect(row.locator(".pct")).to_have_text("80%")
    expect(row.locator(".status")).to_have_text("running")
    expect(page.locator('[data-type="map"] .count')).to_have_text("1 active · 2 total")

    row.locator(".cancel").click()
    expect(row).to_have_attribute("data-status", "cancel_requested")
    expect(row.locator(".cancel")).to_be_hidden()
    state = get_json(f"{gateway.url}/api/workflows/sessions/s1")
    assert (state["status"], state["progress"]) == ("cancel_requested", 80)
    reporter.report("s1", "map", "texturing", 80, status="cancelled")
    expect(row.locator(".status")).to_have_text("cancelled")


def test_dashboard_keeps_a_pending_cancel_through_the_workers_next_report(
    page: Page, gateway: Gateway, reporter: Reporter
) -> None:
    reporter.report("s1", "map", "analyzing", 45)
    open_dashboard(page, gateway)
    row = page.locator('[data-session="s1"]')
    expect(row.locator(".cancel")).to_be_visible()
    row.locator(".cancel").click()
    expect(row).to_have_attribute("data-status", "cancel_requested")
    # The worker has not looked yet: its next ordinary report must not offer Cancel again.
    reporter.report("s1", "map", "texturing", 60)
    expect(row.locator(".step")).to_have_text("texturing")
    expect(row.locator(".bar")).to_have_attribute("aria-valuenow", "60")
    expect(row).to_have_attribute("data-status", "cancel_requested")
    expect(row.locator(".status")).to_have_text("cancelling")
    expect(row.locator(".cancel")).to_be_hidden()
    # So does a page opened afterwards, from the gateway's state and snapshot.
    page.reload()
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(row.locator(".status")).to_have_text("cancelling")
    expect(row.locator(".cancel")).to_be_hidden()
    reporter.report("s1", "map", "texturing", 60, status="cancelled")
    expect(row.locator(".status")).to_have_text("cancelled")


def test_dashboard_shows_a_failure_with_its_error_and_history(
    page: Page, gateway: Gateway, reporter: Reporter
) -> None:
    open_dashboard(page, gateway)
    reporter.report("c1", "character", "portrait", 30)
    reporter.report("c1", "character", "portrait", 70, status="failed", error="GPU out of memory")
    row = page.locator('[data-session="c1"]')
    expect(row).to_have_attribute("data-status", "failed")
    expect(row.locator(".error")).to_be_visible()
    expect(row.locator(".error")).to_have_text("GPU out of memory")
    expect(row.locator(".cancel")).to_be_hidden()

    row.locator(".name").click()
    timeline = page.locator("#timeline li[data-id]")
    expect(timeline).to_have_count(2)
    expect(timeline.nth(1)).to_have_attribute("data-status", "failed")
    expect(timeline.nth(1).locator(".error")).to_have_text("GPU out of memory")


def test_dashboard_says_which_attempt_a_retry_starts_and_why(
    page: Page, gateway: Gateway, reporter: Reporter
) -> None:
    open_dashboard(page, gateway)
    reporter.report("r1", "map", "fetching", 30)
    reporter.report("r1", "map", "fetching", 30, status="retrying", error="timed out", attempt=2)
    row = page.locator('[data-session="r1"]')
    expect(row.locator(".status")).to_have_text("retrying (attempt 2): timed out")
    expect(row.locator(".error")).to_be_hidden()
    expect(row.locator(".cancel")).to_be_visible()
    reporter.report("r1", "map", "fetching", 40, attempt=2)
    expect(row.locator(".status")).to_have_text("running")


def test_dashboard_shows_a_plans_overall_bar_and_the_step_it_is_on(
    page: Page, gateway: Gateway, reporter: Reporter
) -> None:
    open_dashboard(page, gateway)
    plan = [("analyzing", 1), ("generating", 6), ("rendering", 3)]
    with reporter.session("map", "p1", plan=plan, heartbeat_interval=0) as session:
        session.report("analyzing", 100)
        session.report("generating", 50)
        row = page.locator('[data-session="p1"]')
        expect(row.locator(".step")).to_have_text("step 2 of 3: generating 50%")
        expect(row.locator(".pct")).to_have_text("40%")
        # A late joiner, from the HTTP state, shows the same.
        page.reload()
        expect(page.locator('[data-session="p1"] .pct')).to_have_text("40%")
        expect(page.locator('[data-session="p1"] .step')).to_have_text(
            "step 2 of 3: generating 50%"
        )
    expect(page.locator('[data-session="p1"] .pct')).to_have_text("100%")


def test_client_survives_a_killed_gateway_without_missing_a_step(
    page: Page, gateway: Gateway, reporter: Reporter
) -> None:
    load_client(page, gateway)
    page.evaluate(
        """(url) => {
            window.seen = [];
            window.statuses = [];
            window.watcher = relay.watchWorkflow({ url, workflowType: "map" });
            watcher.onChange((state, event) => event && seen.push(event.id));
            watcher.onStatus((status) => statuses.push(status));
        }""",
        gateway.url,
    )
    page.wait_for_function("watcher.status === 'live'")
    published = [reporter.report("s1", "map", f"step {n}", n * 10) for n in (1, 2)]
    page.wait_for_function("n => seen.length === n", arg=len(published))

    gateway.stop(kill=True)
    page.wait_for_function("watcher.status === 'reconnecting'")
    published += [reporter.report("s1", "map", f"step {n}", n * 10) for n in (3, 4, 5)]
    gateway.start()
    published += [reporter.report("s1", "map", f"step {n}", n * 10) for n in (6, 7)]

    page.wait_for_function("n => seen.length >= n", arg=len(published))
    assert page.evaluate("seen") == published
    state = page.evaluate("watcher.get('s1')")
    assert (state["step"], state["progress"], state["lastEventId"]) == ("step 7", 70, published[-1])
    assert page.evaluate("statuses") == ["live", "reconnecting", "live"]


def test_client_reloads_the_state_when_history_no_longer_reaches_back(
    page: Page, gateway: Gateway, reporter: Reporter, redis_url: str
) -> None:
    load_client(page, gateway)
    page.evaluate(
        """(url) => {
            window.watcher = relay.watchWorkflow({ url, workflowType: "map" });
            window.fromHttp = 0;
            watcher.onChange((state, event) => { if (!event) fromHttp += 1; });
        }""",
        gateway.url,
    )
    page.wait_for_function("watcher.status === 'live'")
    reporter.report("s1", "map", "step 1", 10)
    page.wait_for_function("watcher.get('s1')?.progress === 10")

    gateway.stop(kill=True)
    reporter.report("s1", "map", "step 2", 20)
    reporter.report("s1", "map", "step 3", 30)
    with redis.Redis.from_url(redis_url) as raw:
        # Step 1, where the watcher resumes from, is trimmed away.
        raw.xtrim("workflow:progress:map", maxlen=1, approximate=False)
    gateway.start()

    page.wait_for_function("watcher.get('s1')?.step === 'step 3' && fromHttp > 0")
    assert page.evaluate("watcher.get('s1').progress") == 30


def test_client_keeps_sessions_apart_and_watchers_independent_on_one_socket(
    page: Page, gateway: Gateway, reporter: Reporter, redis_url: str
) -> None:
    # a1 started a minute ago: its start is only known to the gateway, not
    # from the latest event a session watcher is sent on subscribing.
    started = int(time.time() * 1000) - 60_000
    with redis.Redis.from_url(redis_url) as raw:
        for progress, ts in ((10, started), (20, started + 30_000)):
            fields = {"session_id": "a1", "step": "a", "progress": progress, "ts": ts}
            raw.xadd("workflow:progress:map", fields)
    wait_until(lambda: session_exists(gateway, "a1"), what="a1 to be read")
    opened = count_sockets(page)
    load_client(page, gateway)
    page.evaluate(
        """(url) => {
            window.watchers = {};
            window.changes = { a1: [], b1: [], all: [] };
            for (const id of ["a1", "b1"]) {
                watchers[id] = relay.watchWorkflow({ url, workflowType: "map", sessionId: id });
                watchers[id].onChange((state) => changes[id].push(state.sessionId));
            }
            watchers.all = relay.watchWorkflow({ url, workflowType: "map" });
            watchers.all.onChange((state) => changes.all.push(state.progress));
        }""",
        gateway.url,
    )
    page.wait_for_function("Object.values(watchers).every((w) => w.status === 'live')")
    page.wait_for_function("t => watchers.a1.get()?.startTime === t", arg=started)
    assert opened == [gateway.url.replace("http", "ws", 1) + "/ws"], "three watchers, one socket"

    reporter.report("b1", "map", "b", 15)
    reporter.report("a1", "map", "a", 30)
    reporter.report("b1", "map", "b", 40)
    page.wait_for_function(
        "watchers.a1.get()?.progress === 30 && watchers.b1.get()?.progress === 40"
    )
    assert page.evaluate("[...watchers.a1.sessions().keys()]") == ["a1"]
    assert page.evaluate("[...watchers.b1.sessions().keys()]") == ["b1"]
    assert set(page.evaluate("changes.a1")) == {"a1"}
    assert set(page.evaluate("changes.b1")) == {"b1"}
    # The time remaining is projected from the session's start, as the gateway does it.
    eta = page.evaluate("watchers.a1.get().estimatedTimeRemaining")
    server = get_json(f"{gateway.url}/api/workflows/sessions/a1")["estimated_time_remaining"]
    assert eta == pytest.approx(server, abs=0.01)

    page.evaluate("watchers.a1.close()")
    reporter.report("a1", "map", "a", 50)
    reporter.report("b1", "map", "b", 60)
    page.wait_for_function(
        "watchers.b1.get()?.progress === 60 && changes.all.includes(50) && changes.all.includes(60)"
    )
    assert page.evaluate("watchers.a1.get().progress") == 30
    assert page.evaluate("watchers.a1.status") == "closed"


def test_dashboard_keeps_up_with_hundreds_of_sessions(
    page: Page, gateway: Gateway, reporter: Reporter
) -> None:
    open_dashboard(page, gateway)
    sessions = [f"bulk-{n:03}" for n in range(300)]
    for progress in (5, 50):
        batch = [
            {
                "session_id": session_id,
                "workflow_type": "bulk",
                "step": "rendering",
                "progress": progress + n % 40,
            }
            for n, session_id in enumerate(sessions)
        ]
        post_json(f"{gateway.url}/api/workflows/progress/batch", batch)
    reporter.report("bulk-299", "bulk", "rendering", 100, status="completed")
    expect(page.locator('[data-type="bulk"] .session')).to_have_count(300)
    expect(page.locator('[data-session="bulk-298"] .bar')).to_have_attribute("aria-valuenow", "68")
    expect(page.locator('[data-session="bulk-299"] .status')).to_have_text("completed")
    expect(page.locator('[data-type="bulk"] .count')).to_have_text("299 active · 300 total")


def test_dashboard_lets_ended_sessions_go_and_counts_them(
    page: Page, gateway: Gateway, reporter: Reporter, redis_url: str
) -> None:
    # "old" ended a minute ago, longer than the page keeps ended sessions.
    publish_aged(redis_url, [("map", "old", "done", 100, 60, {"status": "completed"})])
    wait_until(partial(session_exists, gateway, "old"), what="old to be read")
    reporter.report("run", "map", "meshing", 30)
    open_dashboard(page, gateway, "?keep_ended=5")
    summary = page.locator("#summary")
    expect(page.locator('[data-session="run"]')).to_be_visible()
    expect(summary).to_have_text("1 running · 0 ended shown · 2 total")
    expect(page.locator('[data-session="old"]')).to_have_count(0)

    reporter.report("new", "map", "done", 100, status="completed")
    expect(page.locator('[data-session="new"] .status')).to_have_text("completed")
    expect(summary).to_have_text("1 running · 1 ended shown · 3 total")
    # Five seconds after it ended, it leaves the list; the running one stays.
    expect(page.locator('[data-session="new"]')).to_have_count(0)
    expect(summary).to_have_text("1 running · 0 ended shown · 3 total")
    expect(page.locator('[data-session="run"]')).to_be_visible()

    # A longer time brings back what it covers.
    page.locator("#keep-ended").select_option(label="1 h")
    expect(page.locator("[data-ended]")).to_have_count(2)
    expect(summary).to_have_text("1 running · 2 ended shown · 3 total")

    # "Hide ended" is remembered across visits.
    page.locator("#hide-ended").check()
    expect(page.locator("[data-ended]")).to_have_count(2)
    expect(page.locator("[data-ended]").first).to_be_hidden()
    expect(summary).to_have_text("1 running · 0 ended shown · 3 total")
    open_dashboard(page, gateway)
    expect(page.locator("#hide-ended")).to_be_checked()
    expect(page.locator("#keep-ended")).to_have_value("3600")
    expect(page.locator("[data-ended]")).to_have_count(2)
    expect(page.locator('[data-session="old"]')).to_be_hidden()
    expect(page.locator('[data-session="run"]')).to_be_visible()


def test_dashboard_filters_by_type_id_status_and_owner(
    page: Page, gateway: Gateway, reporter: Reporter
) -> None:
    reporter.report("m-alpha", "map", "meshing", 30, owner="alice")
    reporter.report("m-beta", "map", "meshing", 60, status="failed", error="boom")
    reporter.report("q-alpha", "quest", "writing", 100, status="completed")
    open_dashboard(page, gateway)
    expect(page.locator(".session")).to_have_count(3)
    shown = page.locator(".session:visible")
    names = shown.locator(".name")
    box = page.locator("#filter")

    box.fill("ALPHA")
    expect(names).to_have_text(["m-alpha", "q-alpha"])
    expect(page.locator("#summary")).to_have_text("1 running · 1 ended shown · 2 total")
    box.fill("type:quest")
    expect(names).to_have_text(["q-alpha"])
    expect(page.locator('[data-type="map"]')).to_be_hidden()
    box.fill("status:failed")
    expect(names).to_have_text(["m-beta"])
    box.fill("map running")
    expect(names).to_have_text(["m-alpha"])
    box.fill("id:quest")
    expect(shown).to_have_count(0)
    box.fill("owner:ALICE")
    expect(names).to_have_text(["m-alpha"])
    expect(names.first).to_have_attribute("title", "m-alpha (for alice)")
    names.first.click()
    expect(page.locator("#detail-meta")).to_contain_text("for alice")
    box.fill("")
    expect(shown).to_have_count(3)


def test_dashboard_times_and_warnings_say_what_is_known(
    page: Page, gateway: Gateway, reporter: Reporter, redis_url: str
) -> None:
    publish_aged(
        redis_url,
        [
            ("map", "done", "start", 0, 7, {}),
            ("map", "done", "end", 100, 2, {"status": "completed"}),
        ],
    )
    wait_until(partial(session_exists, gateway, "done"), what="done to be read")
    open_dashboard(page, gateway)
    expect(page.locator('[data-session="done"] .elapsed')).to_have_text("took 5s")

    # One worker says it has a second left, then says nothing more.
    reporter.report("late", "map", "meshing", 50, {"estimated_time_remaining": 1})
    reporter.report("long", "map", "meshing", 50, {"estimated_time_remaining": 3000})
    late = page.locator('[data-session="late"]')
    expect(late.locator(".eta")).to_have_text("stalled")
    expect(late).to_have_attribute("data-stalled", "")
    expect(page.locator('[data-session="long"] .eta')).to_have_text(
        re.compile(r"^~\d+m \d\ds left$")
    )
    expect(page.locator('[data-session="long"] .elapsed')).to_have_text(re.compile(r"elapsed$"))

    # An error on a running event is the worker's warning, not a failure.
    reporter.report("shaky", "map", "retrying", 40, error="timeout; retrying")
    shaky = page.locator('[data-session="shaky"]')
    expect(shaky.locator(".error")).to_have_text("timeout; retrying")
    expect(shaky.locator(".error")).to_have_attribute("data-level", "warning")
    expect(shaky).to_have_attribute("data-status", "running")
    expect(shaky.locator(".status")).to_have_text("running")
    expect(shaky.locator(".cancel")).to_be_visible()
    reporter.report("shaky", "map", "retrying", 40, status="failed", error="gave up")
    expect(shaky.locator(".error")).to_have_attribute("data-level", "error")
    expect(shaky.locator(".status")).to_have_text("failed")


def test_dashboard_shows_full_ids_and_on_a_phone_history_under_the_row(
    page: Page, gateway: Gateway, reporter: Reporter
) -> None:
    long_id = "map-" + "x" * 60 + "-end"
    reporter.report(long_id, "map", "meshing", 30)
    for n in range(3):
        reporter.report(f"q-{n}", "quest", "writing", 10 * n)
    page.set_viewport_size({"width": 390, "height": 800})
    open_dashboard(page, gateway)
    name = page.locator(f'[data-session="{long_id}"] .name')
    expect(name).to_have_attribute("title", long_id)
    # The id is cut short on screen; the title is what shows all of it.
    assert name.evaluate("(el) => el.scrollWidth > el.clientWidth")

    under = "#detail"
    page.locator('[data-session="q-1"] .name').click()
    expect(page.locator(f'[data-session="q-1"] + {under}')).to_be_visible()
    expect(page.locator("#detail-title")).to_have_attribute("title", "q-1")
    expect(page.locator("#timeline li[data-id]")).to_have_count(1)
    page.locator(f'[data-session="{long_id}"] .name').click()
    expect(page.locator(f'[data-session="{long_id}"] + {under}')).to_be_visible()
    expect(page.locator("#detail-title")).to_have_text(long_id)

    # On a wide screen it goes back beside the list.
    page.set_viewport_size({"width": 1280, "height": 760})
    expect(page.locator(f"#layout > {under}")).to_be_visible()
    page.set_viewport_size({"width": 390, "height": 800})
    expect(page.locator(f'[data-session="{long_id}"] + {under}')).to_be_visible()


def test_dashboard_screenshot(page: Page, gateway: Gateway, redis_url: str) -> None:
    eta = {"metadata": json.dumps({"estimated_time_remaining": 25})}
    failed = {"status": "failed", "error": "RuntimeError: GPU out of memory while upscaling"}
    sessions = [
        ("map", "map-forest-01", "analyzing", 5, 95, {}),
        ("map", "map-forest-01", "texturing forests", 62, 1, {}),
        ("map", "map-desert-02", "meshing", 10, 40, {}),
        ("map", "map-desert-02", "meshing dunes", 35, 2, {}),
        ("map", "map-coast-03", "analyzing", 0, 300, {}),
        ("map", "map-coast-03", "done", 100, 12, {"status": "completed"}),
        ("character", "char-elf-07", "sketch", 10, 50, {}),
        ("character", "char-elf-07", "portrait", 35, 8, failed),
        ("character", "char-orc-11", "rigging", 80, 3, eta),
        ("quest", "quest-12", "writing dialogue", 20, 30, {}),
        ("quest", "quest-13", "outline", 55, 120, {}),
        ("quest", "quest-13", "outline", 55, 100, {"status": "cancelled"}),
    ]
    publish_aged(redis_url, sessions)
    for last in ("map-coast-03", "char-orc-11", "quest-13"):
        wait_until(partial(session_exists, gateway, last), what=f"{last} to be read")
    post_json(f"{gateway.url}/api/workflows/sessions/quest-12/cancel", {})

    open_dashboard(page, gateway)
    expect(page.locator(".session")).to_have_count(7)
    expect(page.locator('[data-session="quest-12"] .status')).to_have_text("cancelling")
    page.locator('[data-session="char-elf-07"] .name').click()
    expect(page.locator("#timeline li[data-id]")).to_have_count(2)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "dashboard.png")


def test_client_drops_what_a_reset_history_told_it_and_reloads(
    page: Page, start_gateway: Callable[..., Gateway], own_redis: RedisServer
) -> None:
    gateway = start_gateway(own_redis.url)
    load_client(page, gateway)
    page.evaluate(
        """(url) => {
            window.watcher = relay.watchWorkflow({ url, workflowType: "map" });
        }""",
        gateway.url,
    )
    page.wait_for_function("watcher.status === 'live'")
    with Reporter(own_redis.url) as publisher:
        kept = publisher.report("s1", "map", "step 1", 10)
        with own_redis.client() as client:
            client.save()
        publisher.report("s1", "map", "step 2", 20)
        page.wait_for_function("watcher.get('s1')?.step === 'step 2'")
        own_redis.stop(kill=True)
        own_redis.start()  # from the snapshot: step 2 never happened
        # The gateway's reset frame makes the client take the rebuilt state.
        page.wait_for_function("watcher.get('s1')?.step === 'step 1'", timeout=20_000)
        assert page.evaluate("watcher.get('s1').lastEventId") == kept
        later = publisher.report("s1", "map", "step 3", 30)
    page.wait_for_function("watcher.get('s1')?.step === 'step 3'")
    assert page.evaluate("watcher.get('s1').lastEventId") == later


@pytest.fixture
def locked_gateway(start_gateway: Callable[..., Gateway], redis_url: str) -> Gateway:
    """A gateway that shows sessions only to holders of a token."""
    return start_gateway(redis_url, RELAY_TOKEN_SECRET=SECRET)


def ops_token(ttl_seconds: float = 3600) -> str:
    return mint_token(SECRET, "ops", workflow_types=["*"], cancel=True, ttl_seconds=ttl_seconds)


def count_sockets(page: Page) -> list[str]:
    """The addresses of the WebSockets the page opens from now on, as it opens them."""
    opened: list[str] = []

    def seen(socket: WebSocket) -> None:
        opened.append(socket.url)

    page.on("websocket", seen)
    return opened


def test_locked_dashboard_takes_the_token_from_the_fragment_and_cancels_with_it(
    page: Page, locked_gateway: Gateway, reporter: Reporter
) -> None:
    reporter.report("s1", "map", "analyzing", 40)
    sockets = count_sockets(page)
    page.goto(f"{locked_gateway.url}/#token={ops_token()}")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    row = page.locator('[data-session="s1"]')
    expect(row.locator(".status")).to_have_text("running")
    # The token left the address bar, and never went into a URL.
    assert page.url == locked_gateway.url + "/"
    assert sockets == [locked_gateway.ws_url]
    expect(page.locator("#sign-in")).to_be_hidden()
    expect(page.locator("#sign-out")).to_be_visible()

    row.locator(".cancel").click()
    expect(row).to_have_attribute("data-status", "cancel_requested")
    expect(row.locator(".error")).to_be_hidden()

    # The tab keeps the token: a reload still shows the sessions.
    page.reload()
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(row.locator(".status")).to_have_text("cancelling")


def test_locked_dashboard_asks_for_a_token_and_signs_out(
    page: Page, locked_gateway: Gateway, reporter: Reporter
) -> None:
    reporter.report("s1", "map", "analyzing", 40)
    page.goto(locked_gateway.url + "/")
    expect(page.locator("#connection")).to_have_text("authentication required")
    expect(page.locator("#sign-in")).to_be_visible()
    expect(page.locator("#empty")).to_be_hidden()
    expect(page.locator("#sign-out")).to_be_hidden()

    page.locator("#token").fill(ops_token())
    page.locator("#sign-in button").click()
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(page.locator('[data-session="s1"] .status')).to_have_text("running")
    expect(page.locator("#sign-in")).to_be_hidden()

    page.locator("#sign-out").click()
    expect(page.locator("#connection")).to_have_text("authentication required")
    expect(page.locator("#sign-in")).to_be_visible()
    expect(page.locator(".session")).to_have_count(0)


def test_dashboard_with_a_refused_token_says_why_and_does_not_reconnect(
    page: Page, locked_gateway: Gateway
) -> None:
    sockets = count_sockets(page)
    page.goto(f"{locked_gateway.url}/#token={ops_token(ttl_seconds=-60)}")
    expect(page.locator("#connection")).to_have_text("token expired")
    expect(page.locator("#sign-in")).to_contain_text("expired")
    # The first retry would come within 250 ms; none comes in eight times that.
    with pytest.raises(PlaywrightTimeoutError):
        page.wait_for_event("websocket", timeout=2000)
    assert len(sockets) == 1

    page.locator("#token").fill("forged.not.signed")
    page.locator("#sign-in button").click()
    expect(page.locator("#connection")).to_have_text("authentication required")
    with pytest.raises(PlaywrightTimeoutError):
        page.wait_for_event("websocket", timeout=2000)
    assert len(sockets) == 2


def test_a_watcher_of_the_parent_moves_its_bar_with_the_childrens_frames(
    page: Page, gateway: Gateway, reporter: Reporter
) -> None:
    with reporter.session("map", "p1", heartbeat_interval=0) as parent:
        parent.report("fan-out", 0)
        load_client(page, gateway)
        page.evaluate(
            """(url) => {
                window.parent = relay.watchWorkflow({ url, workflowType: "map", sessionId: "p1" });
            }""",
            gateway.url,
        )
        page.wait_for_function("window.parent.get()?.sessionId === 'p1'")
        tiles = [parent.child("tile", f"t{n}", heartbeat_interval=0) for n in range(2)]
        tiles[0].report("render", 50)
        tiles[1].report("render", 10)
        page.wait_for_function("window.parent.get()?.overallProgress === 30")
        assert page.evaluate("window.parent.get().childrenCount") == 2
        with tiles[0]:
            pass  # completes: counts 100
        page.wait_for_function("window.parent.get()?.overallProgress === 55")
        assert page.evaluate("window.parent.get().childrenCompleted") == 1
        # The watcher holds the parent alone: its children's own records are not its.
        assert page.evaluate("[...window.parent.sessions().keys()]") == ["p1"]


def test_dashboard_shows_a_parents_bar_and_children_done_and_labels_its_children(
    page: Page, gateway: Gateway, reporter: Reporter
) -> None:
    page.goto(f"{gateway.url}/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    with reporter.session("map", "p2", heartbeat_interval=0) as parent:
        parent.report("fan-out", 0)
        with parent.child("tile", "t-a", heartbeat_interval=0) as tile:
            tile.report("render", 40)
        with parent.child("tile", "t-b", heartbeat_interval=0, weight=3) as tile:
            tile.report("render", 20)
            row = page.locator('[data-session="p2"]')
            expect(row.locator(".pct")).to_have_text("40%")  # (100 + 3 * 20) / 4
            expect(row.locator(".step")).to_have_text("1 of 2 children done · fan-out")
            child = page.locator('[data-session="t-b"]')
            expect(child).to_have_attribute("data-child", "")
            expect(child.locator(".step")).to_have_text("render · child of p2")
        page.reload()
        expect(page.locator('[data-session="p2"] .step')).to_have_text(
            "2 of 2 children done · fan-out"
        )
        expect(page.locator('[data-session="p2"] .pct')).to_have_text("100%")

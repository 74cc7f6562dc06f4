"""A parent's one bar in the browser: the client's watcher of the parent, and the dashboard rows."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Page, expect

from relay.client.reporters import Reporter
from tests.browser import load_client
from tests.helpers import Gateway


@pytest.fixture
def gateway(start_gateway: Callable[..., Gateway], redis_url: str) -> Gateway:
    return start_gateway(redis_url)


@pytest.fixture
def reporter(redis_url: str) -> Iterator[Reporter]:
    with Reporter(redis_url) as publisher:
        yield publisher


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

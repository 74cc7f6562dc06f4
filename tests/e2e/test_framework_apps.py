"""The Vue and React example apps, built by Vite from the npm registry, against a real gateway.

Each app is copied with the package beside it (so the checkout gets no
node_modules), installed with ``npm ci``, built once for the module with the
gateway's URL, served from its own origin and driven in headless Chromium.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from relay.client.reporters import Reporter, build_event
from tests.conftest import RedisServer, free_port
from tests.e2e.test_js_package import PACKAGE, manifest, run, tool
from tests.helpers import Gateway, answers_ok, wait_until

ROOT = Path(__file__).resolve().parents[2]
# Each app's own source files, which README.md shows as they are.
SOURCES = {
    "vue": ("vite.config.js", "src/main.js", "src/App.vue"),
    "react": ("vite.config.js", "src/main.js", "src/App.jsx"),
}
# Where each app is served from, chosen before the gateway starts so it can allow them.
APP_PORTS = {app: free_port() for app in SOURCES}


def origin(app: str) -> str:
    return f"http://127.0.0.1:{APP_PORTS[app]}"


@pytest.fixture(scope="module")
def module_gateway_env() -> dict[str, str]:
    return {"RELAY_ALLOWED_ORIGINS": ",".join(origin(app) for app in SOURCES)}


@pytest.fixture(scope="module", params=sorted(SOURCES))
def app(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    module_gateway: Gateway,
) -> Iterator[str]:
    """The app's name, once it is built for the gateway and served at its origin."""
    name: str = request.param
    tool("node")  # what npm and Vite run on
    npm = tool("npm")
    tree = tmp_path_factory.mktemp(name)
    ignore = shutil.ignore_patterns("node_modules", "dist")
    shutil.copytree(PACKAGE, tree / "clients" / "js", ignore=ignore)
    directory = tree / "examples" / name
    shutil.copytree(ROOT / "examples" / name, directory, ignore=ignore)
    run([npm, "ci", "--no-audit", "--no-fund"], directory)
    result = subprocess.run(
        [npm, "exec", "--", "vite", "build"],
        cwd=directory,
        env={**os.environ, "VITE_RELAY_URL": module_gateway.url},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    port = str(APP_PORTS[name])
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", port],
        cwd=directory / "dist",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: answers_ok(origin(name)), what=f"the {name} app's server")
        yield name
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def reporter(redis_server: RedisServer) -> Iterator[Reporter]:
    # Not redis_url: the module's gateway keeps reading the streams, so they are not flushed.
    with Reporter(redis_server.url) as publisher:
        yield publisher


@pytest.mark.slow
def test_the_app_shows_completion_failure_and_a_cancel(
    app: str, page: Page, module_gateway: Gateway, reporter: Reporter
) -> None:
    page.goto(origin(app))
    bar, step, status = page.locator(".bar"), page.locator(".step"), page.locator(".status")

    done = f"{app}-done"
    reporter.report(done, "map", "terrain", 40, {"estimated_time_remaining": 12})
    expect(step).to_have_text("terrain")
    expect(bar).to_have_js_property("value", 40)
    expect(page.locator(".eta")).to_have_text("12 s left")
    reporter.report(done, "map", "rivers", 100, status="completed")
    expect(status).to_have_text("completed")
    expect(bar).to_have_js_property("value", 100)
    expect(page.locator(".eta")).to_have_text("0 s left")
    expect(page.get_by_role("button", name="Cancel")).to_be_disabled()

    failing = f"{app}-failing"
    reporter.report(failing, "map", "cities", 30)
    expect(step).to_have_text("cities")
    reporter.report(failing, "map", "cities", 30, status="failed", error="out of tiles")
    expect(status).to_have_text("failed")
    expect(page.locator(".error")).to_have_text("out of tiles")

    stopped = f"{app}-stopped"
    reporter.report(stopped, "map", "roads", 55)
    expect(step).to_have_text("roads")
    expect(page.locator(".error")).to_have_count(0)
    page.get_by_role("button", name="Cancel").click()
    expect(status).to_have_text("cancel_requested")
    # What the worker's next report learns.
    receipt = reporter.publish(build_event(stopped, "map", "roads", 60))
    assert receipt.cancel_requested
    reporter.report(stopped, "map", "roads", 60, status="cancelled")
    expect(status).to_have_text("cancelled")
    expect(page.get_by_role("button", name="Cancel")).to_be_disabled()


@pytest.mark.parametrize(
    ("name", "source"), [(name, source) for name, files in SOURCES.items() for source in files]
)
def test_the_readme_shows_each_source_file_as_it_is(name: str, source: str) -> None:
    text = (ROOT / "examples" / name / source).read_text(encoding="utf-8")
    assert text.strip()
    assert text in (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("framework", sorted(SOURCES))
def test_the_package_exports_the_binding_with_the_framework_as_an_optional_peer(
    framework: str,
) -> None:
    package = manifest()
    entry = package["exports"][f"./{framework}"]
    assert {entry["types"], entry["default"]} == {f"./{framework}.d.ts", f"./{framework}.js"}
    assert {f"{framework}.js", f"{framework}.d.ts", "progress.js", "progress.d.ts"} <= set(
        package["files"]
    )
    assert framework in package["peerDependencies"]
    assert package["peerDependenciesMeta"][framework] == {"optional": True}
    assert "dependencies" not in package

"""Shared by the tests that drive a headless Chromium: the browser and tab fixtures, page helpers.

Registered as a plugin in ``tests/conftest.py``, so any test asks for
``browser`` or ``page`` by name (and is marked ``browser`` for it).
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import Gateway

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # the check in the browser fixture says what is missing
    sync_playwright = None  # type: ignore[assignment]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
TIMEOUT_MS = 10_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module; skipped without it, except on CI."""
    missing = [
        name
        for name, present in (("chromium", CHROMIUM), ("playwright", sync_playwright))
        if not present
    ]
    if missing:
        message = f"browser tests need {' and '.join(missing)} (apt chromium, pip playwright)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    assert sync_playwright is not None
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh tab; any uncaught script error fails the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 760})
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    context.close()
    assert not errors, errors


def load_client(page: Page, gateway: Gateway) -> None:
    """A page of the gateway's origin with the client module as ``window.relay``."""
    page.goto(gateway.url + "/healthz")
    page.evaluate("async () => { window.relay = await import('/static/relay-client.js'); }")


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def post_json(url: str, body: Any) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)

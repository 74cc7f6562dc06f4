"""Who may cancel: the same right over HTTP and WebSocket, on real gateway processes."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest
from playwright.sync_api import Page, expect

from relay.client.reporters import Reporter
from relay.server.auth import mint_token, read_token
from tests.helpers import Gateway, env_without_relay, receive, state_when

SECRET = "cancel-rights-secret-of-enough-length"
KEY = "publisher-key-for-cancelling"

MODES: dict[str, dict[str, str]] = {
    "development": {},
    "keys": {"RELAY_API_KEYS": KEY},
    "secret": {"RELAY_TOKEN_SECRET": SECRET},
    "both": {"RELAY_API_KEYS": KEY, "RELAY_TOKEN_SECRET": SECRET},
}


def credential(case: str, session_id: str) -> str | None:
    """The bearer value of one row of the matrix, for a cancel of ``session_id``."""
    match case:
        case "none":
            return None
        case "wrong-key":
            return "not-a-configured-key"
        case "key":
            return KEY
        case "watch-token":
            return mint_token(SECRET, "viewer", sessions=[session_id])
        case "watch-type-token":
            return mint_token(SECRET, "viewer", workflow_types=["*"])
        case "cancel-token":
            return mint_token(SECRET, "operator", sessions=[session_id], cancel=True)
        case "cancel-type-token":
            return mint_token(SECRET, "operator", workflow_types=["map"], cancel=True)
        case "cancel-elsewhere-token":
            return mint_token(SECRET, "operator", sessions=["another"], cancel=True)
        case "expired-cancel-token":
            return mint_token(
                SECRET, "operator", sessions=[session_id], cancel=True, ttl_seconds=-60
            )
    raise AssertionError(case)


# The HTTP status of POST /cancel per credential and mode.
HTTP_MATRIX: dict[str, dict[str, int]] = {
    "none": {"development": 202, "keys": 401, "secret": 401, "both": 401},
    "wrong-key": {"development": 202, "keys": 403, "secret": 401, "both": 403},
    "key": {"development": 202, "keys": 202, "secret": 401, "both": 202},
    "watch-token": {"development": 202, "keys": 403, "secret": 403, "both": 403},
    "watch-type-token": {"development": 202, "keys": 403, "secret": 403, "both": 403},
    "cancel-token": {"development": 202, "keys": 403, "secret": 202, "both": 202},
    "cancel-type-token": {"development": 202, "keys": 403, "secret": 202, "both": 202},
    "cancel-elsewhere-token": {"development": 202, "keys": 403, "secret": 404, "both": 404},
    "expired-cancel-token": {"development": 202, "keys": 403, "secret": 401, "both": 401},
}

# What a WebSocket `cancel` answers per token (None: no token) and mode; the
# socket itself needs a token to open in the secret modes.
WS_MATRIX: dict[str, dict[str, str]] = {
    "none": {"development": "cancel_requested", "keys": "forbidden"},
    "watch-token": {
        "development": "cancel_requested",
        "keys": "forbidden",
        "secret": "forbidden",
        "both": "forbidden",
    },
    "watch-type-token": {"secret": "forbidden", "both": "forbidden"},
    "cancel-token": {
        "development": "cancel_requested",
        "keys": "forbidden",
        "secret": "cancel_requested",
        "both": "cancel_requested",
    },
    "cancel-type-token": {"secret": "cancel_requested", "both": "cancel_requested"},
    "cancel-elsewhere-token": {"secret": "not_found", "both": "not_found"},
}

ADMIN = mint_token(SECRET, "admin", workflow_types=["*"])


@pytest.fixture
def reporter(redis_url: str) -> Iterator[Reporter]:
    with Reporter(redis_url) as publisher:
        yield publisher


async def running_session(
    http: aiohttp.ClientSession, gateway: Gateway, reporter: Reporter, session_id: str
) -> None:
    """Start a session straight in Redis and wait until the gateway knows it."""
    reporter.report(session_id, "map", "analyzing", 30)
    await state_when(http, gateway.url, f"{session_id}?token={ADMIN}", status="running")


async def status_of(http: aiohttp.ClientSession, gateway: Gateway, session_id: str) -> str:
    state = await state_when(http, gateway.url, f"{session_id}?token={ADMIN}")
    return str(state["status"])


@pytest.mark.parametrize("mode", list(MODES))
async def test_http_cancel_needs_a_key_or_a_token_with_the_cancel_claim(
    mode: str,
    start_gateway: Callable[..., Gateway],
    redis_url: str,
    reporter: Reporter,
    http: aiohttp.ClientSession,
) -> None:
    gateway = start_gateway(redis_url, **MODES[mode])
    for case, expected_by_mode in HTTP_MATRIX.items():
        session_id = f"http-{case}"
        await running_session(http, gateway, reporter, session_id)
        value = credential(case, session_id)
        headers = {"Authorization": f"Bearer {value}"} if value else {}
        url = f"{gateway.url}/api/workflows/sessions/{session_id}/cancel"
        async with http.post(url, headers=headers) as response:
            answer = await response.json()
            assert response.status == expected_by_mode[mode], (case, answer)
        accepted = response.status == 202
        assert answer.get("status") == ("cancel_requested" if accepted else None), case
        # A refusal costs the session nothing.
        wanted = "cancel_requested" if accepted else "running"
        assert await status_of(http, gateway, session_id) == wanted, case


@pytest.mark.parametrize("mode", list(MODES))
async def test_websocket_cancel_needs_a_token_with_the_cancel_claim(
    mode: str,
    start_gateway: Callable[..., Gateway],
    redis_url: str,
    reporter: Reporter,
    http: aiohttp.ClientSession,
) -> None:
    gateway = start_gateway(redis_url, **MODES[mode])
    cases = {case: by_mode[mode] for case, by_mode in WS_MATRIX.items() if mode in by_mode}
    assert cases
    for case, expected in cases.items():
        session_id = f"ws-{case}"
        await running_session(http, gateway, reporter, session_id)
        value = credential(case, session_id)
        url = gateway.ws_url + (f"?token={value}" if value else "")
        async with http.ws_connect(url) as ws:
            await ws.send_json({"action": "cancel", "session_id": session_id})
            answer = await receive(ws)
        if expected == "cancel_requested":
            assert answer["type"] == "cancel_requested", (case, answer)
        else:
            assert (answer["type"], answer["code"]) == ("error", expected), (case, answer)
        wanted = "cancel_requested" if expected == "cancel_requested" else "running"
        assert await status_of(http, gateway, session_id) == wanted, case


async def test_refusals_do_not_tell_which_sessions_exist(
    start_gateway: Callable[..., Gateway],
    redis_url: str,
    reporter: Reporter,
    http: aiohttp.ClientSession,
) -> None:
    gateway = start_gateway(redis_url, **MODES["both"])
    await running_session(http, gateway, reporter, "hidden")
    mine = mint_token(SECRET, "alice", sessions=["mine"], cancel=True)
    bearer = {"Authorization": f"Bearer {mine}"}
    answers = []
    for session_id in ("hidden", "ghost"):
        base = f"{gateway.url}/api/workflows/sessions/{session_id}"
        for method, url in (("GET", base), ("GET", f"{base}/events"), ("POST", f"{base}/cancel")):
            async with http.request(method, url, headers=bearer) as response:
                body = await response.json()
                answers.append((response.status, body["error"], body["message"]))
    hidden, ghost = answers[:3], answers[3:]
    assert [status for status, _, _ in hidden] == [404, 404, 404]
    # Identical but for the session id the caller named itself.
    assert [(s, e, m.replace("hidden", "ghost")) for s, e, m in hidden] == ghost
    async with http.ws_connect(f"{gateway.ws_url}?token={mine}") as ws:
        for session_id in ("hidden", "ghost"):
            await ws.send_json({"action": "cancel", "session_id": session_id})
            answer = await receive(ws)
            assert answer["code"] == "not_found", answer
    assert await status_of(http, gateway, "hidden") == "running"


@pytest.mark.process
def test_relay_token_cancel_mints_the_cancel_claim() -> None:
    def minted(*extra: str) -> Any:
        done = subprocess.run(
            [sys.executable, "-m", "relay", "token", "--sub", "ops", "--type", "map", *extra],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**env_without_relay(), "RELAY_TOKEN_SECRET": SECRET},
        )
        assert done.returncode == 0, done.stderr
        return read_token(done.stdout.strip(), SECRET)

    with_cancel, without = minted("--cancel"), minted()
    assert with_cancel.allows_cancel("map", "s1")
    assert not with_cancel.allows_cancel("character", "s1")  # scoped to what it may watch
    assert without.allows("map", "s1")
    assert not without.allows_cancel("map", "s1")
    assert (with_cancel.expires_at or 0) > time.time()


def test_dashboard_cancels_with_a_token_that_may_and_only_then(
    page: Page,
    start_gateway: Callable[..., Gateway],
    redis_url: str,
    reporter: Reporter,
) -> None:
    gateway = start_gateway(redis_url, **MODES["both"])
    reporter.report("d1", "map", "analyzing", 40)
    watcher = mint_token(SECRET, "viewer", workflow_types=["*"])
    page.goto(f"{gateway.url}/#token={watcher}")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    row = page.locator('[data-session="d1"]')
    row.locator(".cancel").click()
    expect(row.locator(".error")).to_contain_text("Cancel failed")
    expect(row).to_have_attribute("data-status", "running")

    operator = mint_token(SECRET, "operator", workflow_types=["*"], cancel=True)
    page.goto(f"{gateway.url}/?token={operator}")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    row.locator(".cancel").click()
    expect(row).to_have_attribute("data-status", "cancel_requested")

"""Session owners across real gateways: a user's one token follows the user's new sessions."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from relay.client.reporters import Reporter
from relay.server.auth import mint_token
from tests.e2e.test_socketio import client_script, listening
from tests.helpers import Gateway, event, receive_events, subscribe

__all__ = ["client_script"]

SECRET = "an-owners-e2e-secret-of-enough-length"


async def publish(http: aiohttp.ClientSession, gateway: Gateway, **fields: Any) -> None:
    async with http.post(f"{gateway.url}/api/workflows/progress", json=event(**fields)) as reply:
        assert reply.status == 202, await reply.text()


def alice_token() -> str:
    """The one token a backend mints for alice at sign-in."""
    return mint_token(SECRET, "alice", owner_sessions=True)


@pytest.fixture
def gateway(start_gateway: Callable[..., Gateway], redis_url: str) -> Gateway:
    """A gateway that needs tokens to watch."""
    return start_gateway(redis_url, RELAY_TOKEN_SECRET=SECRET)


def fresh(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def test_a_session_published_on_one_gateway_reaches_its_owner_on_another(
    start_gateway: Callable[..., Gateway], redis_url: str, http: aiohttp.ClientSession
) -> None:
    publisher = start_gateway(redis_url, RELAY_TOKEN_SECRET=SECRET)
    watcher = start_gateway(redis_url, RELAY_TOKEN_SECRET=SECRET)
    mine, theirs = fresh("alice"), fresh("bob")
    async with http.ws_connect(f"{watcher.ws_url}?token={alice_token()}") as ws:
        await subscribe(ws, workflow_type="*")
        await publish(http, publisher, session_id=theirs, owner="bob")
        await publish(http, publisher, session_id=mine, owner="alice", workflow_type="plan")
        await publish(http, publisher, session_id=theirs, progress=50)
        await publish(http, publisher, session_id=mine, workflow_type="plan", progress=60)
        frames = await receive_events(ws, 2)
    assert [(f["data"]["session_id"], f["data"]["progress"]) for f in frames] == [
        (mine, 45),
        (mine, 60),
    ]
    assert [f["data"]["owner"] for f in frames] == ["alice", "alice"]


async def test_a_socketio_client_gets_its_owners_sessions_by_default(
    client_script: Path, gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    token = alice_token()
    mine, theirs = fresh("alice"), fresh("bob")
    async with listening(client_script, gateway, token) as listener:
        await listener.next("connect")
        assert (await listener.subscribed())["workflow_type"] == "*"
        await publish(http, gateway, session_id=theirs, owner="bob")
        await publish(http, gateway, session_id=mine, owner="alice")
        await publish(http, gateway, session_id=fresh("bob"), workflow_type="plan", owner="bob")
        await publish(http, gateway, session_id=mine, progress=70)
        received = await listener.events(2)
    assert [(line["data"]["session_id"], line["data"]["progress"]) for line in received] == [
        (mine, 45),
        (mine, 70),
    ]


async def test_a_socketio_client_resumes_only_its_owners_sessions_after_a_restart(
    client_script: Path, gateway: Gateway, redis_url: str, http: aiohttp.ClientSession
) -> None:
    token = alice_token()
    mine, planned, theirs = fresh("alice"), fresh("alice"), fresh("bob")
    async with listening(client_script, gateway, token, "websocket") as listener:
        await listener.next("connect")
        await publish(http, gateway, session_id=mine, owner="alice", progress=1)
        assert [line["data"]["progress"] for line in await listener.events(1)] == [1]
        gateway.stop()
        await listener.next("disconnect")
        with Reporter(redis_url) as reporter:
            reporter.report(theirs, "map", "theirs", 5, owner="bob")
            reporter.report(mine, "map", "omitted", 2)
            reporter.report(planned, "plan", "planned", 3, owner="alice")
        gateway.start()
        assert (await listener.next("connect", timeout=30))["recovered"] is True
        missed = await listener.events(2)
        assert sorted((line["data"]["session_id"], line["data"]["owner"]) for line in missed) == (
            sorted([(mine, "alice"), (planned, "alice")])
        )
        await publish(http, gateway, session_id=theirs, progress=6)
        await publish(http, gateway, session_id=mine, progress=7)
        assert [line["data"]["progress"] for line in await listener.events(1)] == [7]

"""Session owners: the owner_sessions claim, the hub's owner index, and every way to watch."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import orjson
import pytest

from relay.client.reporters import AsyncReporter, Reporter
from relay.protocol.event import OWNER_PATTERN, ProgressEvent
from relay.protocol.frames import Envelope
from relay.server.auth import OWNER_SESSIONS_CLAIM, AuthError, mint_token, read_token
from relay.server.hub import Hub
from relay.server.openapi import document
from relay.server.session_view import SessionView
from relay.server.settings import Settings
from relay.server.socketio import default_subscriptions
from relay.server.subscriber import Subscriber
from tests.helpers import event, read_back, receive, receive_events, serving, subscribe
from tests.server.test_sse import next_event, read_message

SECRET = "an-owners-test-secret-of-enough-length"
KEY = "owners-publisher-key"


def own_token(subject: str = "alice", **extra: Any) -> str:
    """What a backend mints for a user at sign-in: every session the user owns."""
    return mint_token(SECRET, subject, owner_sessions=True, **extra)


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


# The grant and the token claim.


def test_the_claim_grants_the_subjects_sessions_in_any_type() -> None:
    grant = read_token(own_token(), SECRET)
    assert grant.owned
    assert grant.subject == "alice"
    assert grant.allows("map", "s1", "alice")
    assert grant.allows("other", None, "alice")
    assert not grant.allows("map", "s1", "bob")
    assert not grant.allows("map", "s1")
    assert grant.scope("map", None) == "alice"
    assert grant.scope("*", "s1") == "alice"


def test_other_claims_stay_whole_beside_the_owned_ones() -> None:
    grant = read_token(own_token(workflow_types=["map"]), SECRET)
    assert grant.scope("map", None) is None
    assert grant.scope("plan", None) == "alice"
    assert grant.allows("map", "s9", "bob")


def test_without_the_claim_owning_a_session_grants_nothing() -> None:
    grant = read_token(mint_token(SECRET, "alice", workflow_types=["map"]), SECRET)
    assert not grant.allows("plan", "s1", "alice")
    with pytest.raises(AuthError):
        grant.scope("plan", None)


def test_the_claim_must_be_a_boolean() -> None:
    claims = {"sub": "alice", "exp": int(time.time()) + 60, "owner_sessions": "yes"}
    with pytest.raises(AuthError, match="owner_sessions"):
        read_token(jwt.encode(claims, SECRET, algorithm="HS256"), SECRET)
    claims["owner_sessions"] = False
    with pytest.raises(AuthError, match="grants neither"):
        read_token(jwt.encode(claims, SECRET, algorithm="HS256"), SECRET)


# The hub's owner index and the session view.


def envelope(number: int, session: str, owner: str | None, wtype: str = "map") -> Envelope:
    owned = ProgressEvent(
        session_id=session, workflow_type=wtype, step="s", progress=1, owner=owner, ts=1
    )
    return Envelope.of(f"{number}-0", owned)


def listener(name: str) -> tuple[Subscriber, list[str]]:
    got: list[str] = []

    async def send(text: str) -> None:
        got.append(text)

    async def close(code: int, reason: str) -> None:
        return None

    return Subscriber(send, close, limit=100, send_timeout=5, name=name), got


def test_an_owner_scoped_subscription_gets_only_its_owners_sessions() -> None:
    hub = Hub()
    alice, _ = listener("alice")
    everyone, _ = listener("everyone")
    for subscriber in (alice, everyone):
        hub.attach(subscriber)
    hub.subscribe(alice, ("*", None), owner="alice")
    hub.subscribe(everyone, ("map", None))
    assert hub.scope(alice, ("*", None)) == "alice"
    assert hub.scope(everyone, ("map", None)) is None
    assert hub.subscriptions == 2
    assert hub.route(envelope(1, "a1", "alice")) == 2
    assert hub.route(envelope(2, "b1", "bob")) == 1
    assert hub.route(envelope(3, "u1", None)) == 1
    assert hub.route(envelope(4, "a2", "alice", wtype="plan")) == 1
    assert hub.broadcast("plan", "{}") == 1
    assert hub.unsubscribe(alice, ("*", None))
    assert hub.route(envelope(5, "a1", "alice")) == 1
    hub.subscribe(alice, ("map", "a3"), owner="alice")
    hub.detach(alice)
    assert hub.subscriptions == 1
    assert hub.route(envelope(6, "a3", "alice")) == 1


def test_subscribing_again_under_another_scope_replaces_the_first() -> None:
    hub = Hub()
    viewer, _ = listener("viewer")
    hub.attach(viewer)
    hub.subscribe(viewer, ("map", None), owner="alice")
    hub.subscribe(viewer, ("map", None))
    assert hub.subscriptions == 1
    assert hub.route(envelope(1, "b1", "bob")) == 1
    hub.subscribe(viewer, ("map", None), owner="alice")
    assert hub.subscriptions == 1
    assert hub.route(envelope(2, "b1", "bob")) == 0


def fold(view: SessionView, number: int, owner: str | None, step: str) -> Envelope:
    report = ProgressEvent(
        session_id="s1", workflow_type="map", step=step, progress=number, owner=owner, ts=number
    )
    delivered, shown = view.delivered(f"{number}-0", report)
    view.apply(delivered, shown)
    return delivered


def test_the_first_owner_named_stays_with_the_session() -> None:
    view = SessionView(ttl_ms=10**15, max_sessions=10)
    assert fold(view, 1, None, "unowned").owner is None
    assert fold(view, 2, "alice", "claimed").owner == "alice"
    omitted = fold(view, 3, None, "omitted")
    other = fold(view, 4, "bob", "renamed")
    assert omitted.owner == other.owner == "alice"
    assert orjson.loads(other.data_json)["owner"] == "alice"
    state = view.get("s1")
    assert state is not None
    assert state.as_dict()["owner"] == "alice"
    assert [s.session_id for s in view.sessions(owner="alice")] == ["s1"]
    assert list(view.sessions(owner="bob")) == []


# Through a gateway and Redis.


@pytest.fixture
async def base(redis_url: str) -> AsyncIterator[str]:
    settings = Settings(
        redis_url=redis_url,
        read_block_ms=100,
        api_keys=KEY,
        token_secret=SECRET,
        sse_keepalive=0.2,
    )
    async with serving(settings) as url:
        yield url


async def publish(http: aiohttp.ClientSession, base: str, session: str, **fields: Any) -> str:
    body = event(session, **fields)
    async with http.post(f"{base}/api/workflows/progress", json=body, headers=bearer(KEY)) as reply:
        assert reply.status == 202, await reply.text()
        return str((await reply.json())["id"])


def sessions_of(frames: list[dict[str, Any]]) -> list[str]:
    return [frame["data"]["session_id"] for frame in frames]


async def test_a_new_session_reaches_its_owners_open_socket_and_nobody_elses(
    http: aiohttp.ClientSession, base: str
) -> None:
    async with http.ws_connect(f"{base}/ws?token={own_token()}") as ws:
        await subscribe(ws, workflow_type="*")
        await publish(http, base, "bob-1", owner="bob")
        await publish(http, base, "alice-1", owner="alice", workflow_type="plan")
        await publish(http, base, "free-1")
        # Later events omitting the owner are still the owner's.
        await publish(http, base, "alice-1", workflow_type="plan", step="later", progress=60)
        await publish(http, base, "alice-1", workflow_type="plan", owner="bob", progress=70)
        await publish(http, base, "bob-1", owner="bob", progress=80)
        frames = await receive_events(ws, 3)
        assert sessions_of(frames) == ["alice-1"] * 3
        assert [f["data"]["progress"] for f in frames] == [45, 60, 70]
        assert {f["data"]["owner"] for f in frames} == {"alice"}
        await publish(http, base, "alice-2", owner="alice")
        assert sessions_of(await receive_events(ws, 1)) == ["alice-2"]


async def test_sse_streams_only_the_owners_sessions(http: aiohttp.ClientSession, base: str) -> None:
    url = f"{base}/api/workflows/events?token={own_token()}"
    async with http.get(url) as stream:
        assert stream.status == 200
        assert (await read_message(stream)) == {"retry": "1000"}
        assert (await read_message(stream))["event"] == "subscribed"
        await publish(http, base, "bob-1", owner="bob")
        await publish(http, base, "alice-1", owner="alice")
        await publish(http, base, "alice-1", progress=50)
        got = [orjson.loads((await next_event(stream))["data"]) for _ in range(2)]
        assert [(d["session_id"], d["progress"]) for d in got] == [("alice-1", 45), ("alice-1", 50)]


async def test_snapshot_and_since_hold_only_the_owners_sessions(
    http: aiohttp.ClientSession, base: str
) -> None:
    first = await publish(http, base, "alice-1", owner="alice")
    await publish(http, base, "bob-1", owner="bob")
    await publish(http, base, "alice-2", owner="alice", progress=10)
    await publish(http, base, "alice-1", progress=55)
    await read_back(http, base, 4)
    async with http.ws_connect(f"{base}/ws?token={own_token()}") as ws:
        await subscribe(ws, workflow_type="map", snapshot=True)
        snapshot = await receive_events(ws, 2)
        assert sorted(sessions_of(snapshot)) == ["alice-1", "alice-2"]
    async with http.ws_connect(f"{base}/ws?token={own_token()}") as ws:
        answer = await subscribe(ws, workflow_type="map", since=first)
        assert answer["recovered"] is True
        replayed = await receive_events(ws, 2)
        assert [(f["data"]["session_id"], f["data"]["progress"]) for f in replayed] == [
            ("alice-2", 10),
            ("alice-1", 55),
        ]
        await publish(http, base, "bob-1", owner="bob", progress=90)
        await publish(http, base, "alice-2", progress=20)
        assert sessions_of(await receive_events(ws, 1)) == ["alice-2"]


async def test_the_listing_and_the_session_endpoints_answer_the_owner(
    http: aiohttp.ClientSession, base: str
) -> None:
    await publish(http, base, "alice-1", owner="alice")
    await publish(http, base, "bob-1", owner="bob")
    await publish(http, base, "free-1")
    mine = bearer(own_token())
    async with http.get(f"{base}/api/workflows/sessions", headers=mine) as reply:
        assert [s["session_id"] for s in await reply.json()] == ["alice-1"]
    watcher = bearer(mint_token(SECRET, "ops", workflow_types=["*"]))
    listing = f"{base}/api/workflows/sessions?owner=bob"
    async with http.get(listing, headers=watcher) as reply:
        assert [(s["session_id"], s["owner"]) for s in await reply.json()] == [("bob-1", "bob")]
    async with http.get(f"{base}/api/workflows/sessions/alice-1", headers=mine) as reply:
        assert (await reply.json())["owner"] == "alice"
    async with http.get(f"{base}/api/workflows/sessions/alice-1/events", headers=mine) as reply:
        assert [f["data"]["session_id"] for f in await reply.json()] == ["alice-1"]
    async with http.get(f"{base}/api/workflows/sessions/bob-1", headers=mine) as reply:
        assert reply.status == 404
    cancel = f"{base}/api/workflows/sessions/alice-1/cancel"
    async with http.post(cancel, headers=mine) as reply:
        assert reply.status == 403
    async with http.post(cancel, headers=bearer(own_token(cancel=True))) as reply:
        assert reply.status == 202
    bobs = f"{base}/api/workflows/sessions/bob-1/cancel"
    async with http.post(bobs, headers=bearer(own_token(cancel=True))) as reply:
        assert reply.status == 404


async def test_a_token_without_the_claim_gets_none_of_it(
    http: aiohttp.ClientSession, base: str
) -> None:
    other = mint_token(SECRET, "alice", workflow_types=["plan"])
    await publish(http, base, "alice-1", owner="alice")
    async with http.ws_connect(f"{base}/ws?token={other}") as ws:
        await ws.send_str(orjson.dumps({"action": "subscribe", "workflow_type": "map"}).decode())
        refused = await receive(ws)
        assert refused["type"] == "error"
        assert refused["code"] == "forbidden"
    async with http.get(f"{base}/api/workflows/sessions", headers=bearer(other)) as reply:
        assert await reply.json() == []
    async with http.get(f"{base}/api/workflows/sessions/alice-1", headers=bearer(other)) as reply:
        assert reply.status == 404
    url = f"{base}/api/workflows/events?workflow_type=map&token={other}"
    async with http.get(url) as reply:
        assert reply.status == 403


async def test_a_swapped_token_keeps_only_what_it_grants(
    http: aiohttp.ClientSession, base: str
) -> None:
    async with http.ws_connect(f"{base}/ws?token={own_token()}") as ws:
        await subscribe(ws, workflow_type="map")
        await ws.send_str(orjson.dumps({"action": "auth", "token": own_token()}).decode())
        assert (await receive(ws))["type"] == "authenticated"
        await ws.send_str(orjson.dumps({"action": "auth", "token": own_token("bob")}).decode())
        dropped = await receive(ws)
        assert dropped["type"] == "unsubscribed"
        assert dropped["workflow_type"] == "map"


# The reporters.


async def test_the_reporters_send_the_owner_with_every_event_of_a_session(
    http: aiohttp.ClientSession, base: str, redis_url: str
) -> None:
    async with http.ws_connect(f"{base}/ws?token={own_token()}") as ws:
        await subscribe(ws, workflow_type="*")
        with Reporter(redis_url) as reporter:
            with reporter.session("map", "sync-1", owner="alice", heartbeat_interval=0) as job:
                job.report("loading", 30)
            reporter.report("sync-2", "map", "once", 5, owner="alice")
            reporter.report("sync-3", "map", "theirs", 5, owner="bob")
        async with AsyncReporter(redis_url) as areporter:
            session = areporter.session("plan", "async-1", owner="alice", heartbeat_interval=0)
            async with session as job:
                await job.report("loading", 30)
        frames = await receive_events(ws, 5)
        assert sessions_of(frames) == ["sync-1", "sync-1", "sync-2", "async-1", "async-1"]
        assert {f["data"]["owner"] for f in frames} == {"alice"}


def test_the_openapi_document_names_the_owner_field_and_filter() -> None:
    spec = document(Settings())
    listing = spec["paths"]["/api/workflows/sessions"]["get"]["parameters"]
    assert [p["schema"]["pattern"] for p in listing if p["name"] == "owner"] == [OWNER_PATTERN]
    schemas = spec["components"]["schemas"]
    for name in ("ProgressEvent", "EventData", "SessionStateAnswer"):
        assert "owner" in schemas[name]["properties"], name
    assert "owner" in schemas["SessionStateAnswer"]["required"]


def test_a_socketio_client_is_subscribed_to_its_own_sessions_beside_its_types() -> None:
    grant = read_token(own_token(workflow_types=["map"], sessions=["s9"]), SECRET)
    assert default_subscriptions(grant) == [("map", None), ("*", "s9"), ("*", None)]
    assert default_subscriptions(read_token(own_token(), SECRET)) == [("*", None)]


def test_the_docs_name_the_claim_the_gateway_reads() -> None:
    root = Path(__file__).resolve().parents[2]
    for name in ("README.md", "docs/protocol.md"):
        assert f"`{OWNER_SESSIONS_CLAIM}" in (root / name).read_text(encoding="utf-8"), name

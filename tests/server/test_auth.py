"""The auth matrix: publisher keys, subscriber tokens and origins on every endpoint."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest

from relay.server.auth import mint_token, read_token
from relay.server.settings import Settings
from tests.helpers import event, receive, receive_events, serving, state_when

SECRET = "test-secret-with-enough-length-for-hs256"
KEY = "publisher-key-1"
ORIGIN = "https://app.example"


def token(**claims: Any) -> str:
    body = {"sub": "alice", "exp": int(time.time()) + 600, **claims}
    return jwt.encode(body, SECRET, algorithm="HS256")


def unsigned(**claims: Any) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    body = {"sub": "mallory", "exp": int(time.time()) + 600, **claims}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(body)}."


BAD_TOKENS = {
    "forged": jwt.encode(
        {"sub": "x", "exp": int(time.time()) + 600, "workflow_types": ["*"]},
        "another-secret-of-sufficient-length!!",
        algorithm="HS256",
    ),
    "expired": token(exp=int(time.time()) - 10, workflow_types=["*"]),
    "alg-none": unsigned(workflow_types=["*"]),
    "garbage": "not.a.token",
}


@pytest.fixture
async def base(redis_url: str) -> AsyncIterator[str]:
    settings = Settings(
        redis_url=redis_url,
        read_block_ms=100,
        api_keys=f"{KEY},second-key",
        token_secret=SECRET,
        allowed_origins=ORIGIN,
    )
    async with serving(settings) as url:
        yield url


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


async def publish(http: aiohttp.ClientSession, base: str, **fields: Any) -> str:
    url = f"{base}/api/workflows/progress"
    async with http.post(url, json=event(**fields), headers=bearer(KEY)) as response:
        assert response.status == 202, await response.text()
        return str((await response.json())["id"])


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/workflows/progress", event()),
        ("/api/workflows/progress/batch", [event()]),
        ("/api/workflows/sessions/s1/cancel", None),
    ],
)
async def test_publishing_needs_a_valid_key(
    base: str, http: aiohttp.ClientSession, path: str, body: Any
) -> None:
    async with http.post(f"{base}{path}", json=body) as response:
        assert response.status == 401
        assert (await response.json())["error"] == "unauthorized"
        assert response.headers["WWW-Authenticate"] == "Bearer"
    async with http.post(f"{base}{path}", json=body, headers=bearer("wrong")) as response:
        assert response.status == 403
    async with http.post(f"{base}{path}", json=body, headers=bearer("second-key")) as response:
        assert response.status in (202, 404)  # cancel of an unknown session is 404


async def test_session_endpoints_honour_the_token(base: str, http: aiohttp.ClientSession) -> None:
    last = await publish(http, base, session_id="mine")
    await publish(http, base, session_id="theirs")
    admin = token(workflow_types=["*"])
    await state_when(http, base, f"mine?token={admin}", last_event_id=last)
    url = f"{base}/api/workflows/sessions/mine"
    async with http.get(url) as response:
        assert response.status == 401
    for name, bad in BAD_TOKENS.items():
        async with http.get(url, headers=bearer(bad)) as response:
            assert response.status == 401, name
    mine_only = token(sessions=["mine"])
    async with http.get(url, headers=bearer(mine_only)) as response:
        assert response.status == 200
    async with http.get(f"{url}/events?token={mine_only}") as response:
        assert response.status == 200
    async with http.get(f"{base}/api/workflows/sessions/theirs", headers=bearer(mine_only)) as r:
        assert r.status == 404  # as for an unknown session: existence is not revealed
        assert (await r.json())["error"] == "not_found"
    async with http.get(f"{base}/api/workflows/sessions", headers=bearer(mine_only)) as response:
        assert [s["session_id"] for s in await response.json()] == ["mine"]
    typed = bearer(token(workflow_types=["map"]))
    async with http.get(f"{base}/api/workflows/sessions/theirs", headers=typed) as response:
        assert response.status == 200


async def close_code(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    message = await ws.receive(timeout=10)
    while message.type is aiohttp.WSMsgType.TEXT:
        message = await ws.receive(timeout=10)
    return ws.close_code


@pytest.mark.parametrize(
    ("name", "expected"),
    [("forged", 4001), ("expired", 4002), ("alg-none", 4001), ("garbage", 4001)],
)
async def test_websocket_refuses_bad_tokens_with_a_close_code(
    base: str, http: aiohttp.ClientSession, name: str, expected: int
) -> None:
    async with http.ws_connect(f"{base}/ws?token={BAD_TOKENS[name]}&workflow_type=map") as ws:
        assert await close_code(ws) == expected
    async with http.ws_connect(f"{base}/ws") as ws:
        await ws.send_json({"action": "auth", "token": BAD_TOKENS[name]})
        assert await close_code(ws) == expected


async def test_websocket_without_token_is_closed(base: str, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(f"{base}/ws") as ws:
        await ws.send_json({"action": "subscribe", "workflow_type": "map"})
        assert await close_code(ws) == 4001


async def test_websocket_grant_scopes_subscriptions(base: str, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(f"{base}/ws") as ws:
        await ws.send_json({"action": "auth", "token": token(sessions=["mine"])})
        assert await receive(ws) == {"type": "authenticated", "sub": "alice"}
        await ws.send_json({"action": "subscribe", "workflow_type": "map"})
        assert (await receive(ws))["code"] == "forbidden"
        await ws.send_json({"action": "subscribe", "workflow_type": "*"})
        assert (await receive(ws))["code"] == "forbidden"
        await ws.send_json({"action": "subscribe", "workflow_type": "*", "session_id": "mine"})
        assert (await receive(ws))["type"] == "subscribed"
        await publish(http, base, session_id="theirs")
        wanted = await publish(http, base, session_id="mine", workflow_type="character")
        assert [f["id"] for f in await receive_events(ws, 1)] == [wanted]


async def test_token_in_query_string_and_expiry_closes(
    base: str, http: aiohttp.ClientSession
) -> None:
    short = token(workflow_types=["map"], exp=int(time.time()) + 2)
    async with http.ws_connect(f"{base}/ws?token={short}&workflow_type=map") as ws:
        assert (await receive(ws))["type"] == "subscribed"
        assert await close_code(ws) == 4002


async def test_sse_honours_the_token(base: str, http: aiohttp.ClientSession) -> None:
    url = f"{base}/api/workflows/events?workflow_type=map"
    async with http.get(url) as response:
        assert response.status == 401
    async with http.get(url, headers=bearer(BAD_TOKENS["expired"])) as response:
        assert response.status == 401
    async with http.get(f"{url}&token={token(sessions=['mine'])}") as response:
        assert response.status == 403
    async with http.get(f"{url}&token={token(workflow_types=['map'])}") as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"


async def test_origins_and_cors(base: str, http: aiohttp.ClientSession) -> None:
    admin = token(workflow_types=["*"])
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(
            f"{base}/ws?token={admin}", headers={"Origin": "https://evil.example"}
        )
    assert refused.value.status == 403
    for allowed in (ORIGIN, base):  # the gateway's own pages are never refused
        async with http.ws_connect(f"{base}/ws?token={admin}", headers={"Origin": allowed}) as ws:
            await ws.send_json({"action": "ping"})
            assert await receive(ws) == {"type": "pong"}
    headers = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    async with http.options(f"{base}/api/workflows/progress", headers=headers) as response:
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
    headers["Origin"] = "https://evil.example"
    async with http.options(f"{base}/api/workflows/progress", headers=headers) as response:
        assert response.status == 405
        assert "Access-Control-Allow-Origin" not in response.headers
    async with http.get(f"{base}/healthz", headers={"Origin": ORIGIN}) as response:
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    async with http.get(f"{base}/healthz", headers={"Origin": "https://evil.example"}) as r:
        assert "Access-Control-Allow-Origin" not in r.headers
    async with http.get(f"{base}/healthz") as r:  # not a browser: no CORS headers at all
        assert not any(name.startswith("Access-Control-") for name in r.headers)
        assert "Vary" not in r.headers


@pytest.mark.process
def test_relay_token_mints_a_token_the_gateway_accepts() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "relay",
            "token",
            "--sub",
            "alice",
            "--session",
            "s1",
            "--session",
            "s2",
            "--ttl",
            "1h",
            "--secret",
            SECRET,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    grant = read_token(done.stdout.strip(), SECRET)
    assert grant.subject == "alice"
    assert grant.sessions == {"s1", "s2"}
    assert grant.allows("map", "s1")
    assert not grant.allows("map", "s3")
    assert 3500 < (grant.expires_at or 0) - time.time() <= 3600


def test_mint_and_read_round_trip() -> None:
    minted = mint_token(SECRET, "bob", workflow_types=["map"], ttl_seconds=60)
    grant = read_token(minted, SECRET)
    assert grant.allows("map", None)
    assert not grant.allows("character", None)
    assert not grant.allows("*", None)

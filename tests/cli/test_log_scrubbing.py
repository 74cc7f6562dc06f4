"""No token, bearer credential or URL password reaches the gateway's log, whoever logs it."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Callable

import aiohttp
import pytest

from relay.cli.logs import configure_logging, scrub
from relay.server.auth import mint_token
from tests.helpers import Gateway, receive

SECRET = "scrubbing-secret-0123456789abcdef"
TOKEN = "eyJhbGciOi.secret-token-text-7d41.signature"


@pytest.mark.parametrize(
    ("text", "cleaned"),
    [
        (f"GET /ws?token={TOKEN} HTTP/1.1", "GET /ws?token=[redacted] HTTP/1.1"),
        (f"/api?type=map&token={TOKEN}&session=s1", "/api?type=map&token=[redacted]&session=s1"),
        (f"/cb#access_token={TOKEN}", "/cb#access_token=[redacted]"),
        (f"TOKEN={TOKEN}", "TOKEN=[redacted]"),
        (f"{{'Authorization': 'Bearer {TOKEN}'}}", "{'Authorization': 'Bearer [redacted]'}"),
        (f"authorization: bearer  {TOKEN}\n", "authorization: bearer  [redacted]\n"),
        (f'{{"action": "auth", "token": "{TOKEN}"}}', '{"action": "auth", "token": "[redacted]"}'),
        (f"to redis://app:{TOKEN}@h:6379/0 now", "to redis://app:[redacted]@h:6379/0 now"),
        (
            f"redis+sentinel://h/relay?sentinel_password={TOKEN}&x=1 failed",
            "redis+sentinel://h/relay?sentinel_password=[redacted]&x=1 failed",
        ),
        # nothing secret: unchanged
        ("from redis://h:6379/0 as user@example", None),
        ("a token is required: ?token= or Authorization: Bearer", None),
        ("WWW-Authenticate: Bearer", None),
        ("ws:127.0.0.1 connected", None),
    ],
)
def test_scrub_blanks_secrets_and_nothing_else(text: str, cleaned: str | None) -> None:
    assert scrub(text) == (text if cleaned is None else cleaned)


@pytest.mark.usefixtures("root_logger")
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_every_record_is_scrubbed_whoever_logs_it(log_format: str) -> None:
    stream = io.StringIO()
    configure_logging("debug", log_format, stream)
    library = logging.getLogger("some.library.deep.inside")
    headers = {"Authorization": f"Bearer {TOKEN}"}
    library.debug("request %s headers %r", f"/ws?token={TOKEN}", headers)
    try:
        raise ValueError(f"bad url /events?token={TOKEN}")
    except ValueError:
        logging.getLogger("relay.test").exception("failed")
    output = stream.getvalue()
    assert TOKEN not in output
    assert "request /ws?token=[redacted] headers {'Authorization': 'Bearer [redacted]'}" in output
    assert "ValueError: bad url /events?token=[redacted]" in output
    if log_format == "json":
        lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
        assert "ValueError: bad url /events?token=[redacted]" in lines[1]["exception"]


async def test_a_gateway_at_debug_level_logs_no_token(
    start_gateway: Callable[..., Gateway], http: aiohttp.ClientSession
) -> None:
    token = mint_token(SECRET, "alice", workflow_types=["map"])
    gateway = start_gateway(RELAY_TOKEN_SECRET=SECRET, RELAY_LOG_LEVEL="debug")
    bearer = {"Authorization": f"Bearer {token}"}
    async with http.ws_connect(f"{gateway.ws_url}?token={token}&workflow_type=map") as ws:
        assert (await receive(ws))["type"] == "subscribed"
    async with http.ws_connect(gateway.ws_url, headers=bearer) as ws:
        await ws.send_json({"action": "subscribe", "workflow_type": "map"})
        assert (await receive(ws))["type"] == "subscribed"
    async with http.ws_connect(gateway.ws_url) as ws:
        await ws.send_json({"action": "auth", "token": token})
        assert (await receive(ws))["type"] == "authenticated"
        await ws.send_json({"action": "subscribe", "workflow_type": "map"})
        assert (await receive(ws))["type"] == "subscribed"
    url = f"{gateway.url}/api/workflows/events?workflow_type=map"
    async with http.get(f"{url}&token={token}") as response:
        assert response.status == 200
    async with http.get(url, headers=bearer) as response:
        assert response.status == 200
    async with http.get(f"{url}&token={token}x") as response:
        assert response.status == 401
    # aiohttp logs the traceback of a malformed request with its request line.
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(f"GET /ws?token={token}\x01 HTTP/1.1\r\nHost: relay\r\n\r\n".encode())
    assert (await reader.readline()).startswith(b"HTTP/1.0 400")
    writer.close()
    await writer.wait_closed()
    gateway.stop()
    log = gateway.log.read_text()
    assert "ws:127.0.0.1 connected" in log
    assert "Error handling request" in log
    assert "GET /ws?token=[redacted]" in log
    signature = token.rsplit(".", 1)[1]
    assert signature not in log
    assert token.split(".")[1] not in log

"""Edges of HTTP and WebSocket input: stream id bounds, charsets, detail caps, clients leaving."""

from __future__ import annotations

import re
import socket
import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.helpers import parse_content_type
from hypothesis import given
from hypothesis import strategies as st

from relay.protocol.event import MAX_DETAIL_FIELD_CHARS, MAX_DETAIL_ITEMS
from relay.protocol.stream_ids import STREAM_ID_PART_MAX, STREAM_ID_PATTERN
from relay.server.http_publish import PLAIN_JSON
from relay.server.settings import Settings
from tests.helpers import Gateway, event, receive, serving, state_when, wait_until

OUT_OF_RANGE_IDS = [
    "1-99999999999999999999",
    "99999999999999999999-0",
    f"{STREAM_ID_PART_MAX + 1}-0",
    f"0-{STREAM_ID_PART_MAX + 1}",
    "01-0",
    "1-0\n",
    "\u0661-0",  # ARABIC-INDIC DIGIT ONE: a digit, but not a stream id's
]
LARGEST_ID = f"{STREAM_ID_PART_MAX}-{STREAM_ID_PART_MAX}"


@pytest.fixture
async def base(redis_url: str) -> AsyncIterator[str]:
    async with serving(Settings(redis_url=redis_url)) as url:
        yield url


async def publish(http: aiohttp.ClientSession, base: str, **fields: Any) -> str:
    async with http.post(f"{base}/api/workflows/progress", json=event(**fields)) as response:
        assert response.status == 202, await response.text()
        return str((await response.json())["id"])


async def rejected(http: aiohttp.ClientSession, base: str) -> str:
    async with http.get(f"{base}/metrics") as response:
        return await response.text()


@given(st.integers(min_value=0, max_value=2**66), st.integers(min_value=0, max_value=2**66))
def test_stream_id_pattern_is_exactly_the_64_bit_range(ms: int, seq: int) -> None:
    valid = ms <= STREAM_ID_PART_MAX and seq <= STREAM_ID_PART_MAX
    assert bool(re.fullmatch(STREAM_ID_PATTERN, f"{ms}-{seq}")) is valid


@given(st.integers(min_value=STREAM_ID_PART_MAX - 10**6, max_value=STREAM_ID_PART_MAX + 10**6))
def test_stream_id_pattern_near_the_bound(ms: int) -> None:
    assert bool(re.fullmatch(STREAM_ID_PATTERN, f"{ms}-0")) is (ms <= STREAM_ID_PART_MAX)


@pytest.mark.parametrize("since", OUT_OF_RANGE_IDS)
async def test_malformed_since_is_422_everywhere_over_http(
    base: str, http: aiohttp.ClientSession, since: str
) -> None:
    await publish(http, base)
    await state_when(http, base, "s1", progress=45)
    urls = [
        f"{base}/api/workflows/sessions/s1/events",
        f"{base}/api/workflows/events?workflow_type=map",
        f"{base}/ws?workflow_type=map",
    ]
    for url in urls:
        async with http.get(url, params={"since": since}) as response:
            assert response.status == 422, (url, await response.text())
            answer = await response.json()
        assert answer["error"] == "validation_failed"
        assert any(item["field"].endswith("since") for item in answer["detail"]), answer
    if since.isprintable():  # a header cannot carry a newline
        headers = {"Last-Event-ID": since}
        sse_url = f"{base}/api/workflows/events?workflow_type=map"
        async with http.get(sse_url, headers=headers) as response:
            assert response.status == 422
    assert 'reason="unavailable"' not in await rejected(http, base)


async def test_malformed_since_in_a_frame_is_an_error_frame(
    base: str, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(f"{base}/ws") as ws:
        for since in OUT_OF_RANGE_IDS:
            frame = {"action": "subscribe", "workflow_type": "map", "since": since}
            await ws.send_str(orjson.dumps(frame).decode())
            answer = await receive(ws)
            assert answer["type"] == "error", answer
            assert answer["code"] == "invalid_message"
            assert answer["detail"][0]["field"] == "subscribe.since"
        await ws.send_str('{"action": "ping"}')
        assert await receive(ws) == {"type": "pong"}  # and the connection carries on


async def test_the_largest_stream_id_is_valid(base: str, http: aiohttp.ClientSession) -> None:
    await publish(http, base)
    await state_when(http, base, "s1", progress=45)
    url = f"{base}/api/workflows/sessions/s1/events"
    async with http.get(url, params={"since": LARGEST_ID}) as response:
        assert response.status == 200
        assert await response.json() == []
    async with http.ws_connect(f"{base}/ws") as ws:
        frame = {"action": "subscribe", "workflow_type": "map", "since": LARGEST_ID}
        await ws.send_str(orjson.dumps(frame).decode())
        answer = await receive(ws)
    assert answer["type"] == "subscribed", answer


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/json; charset=UTF-8",
        'application/json; charset="utf-8"',
        "application/json;charset=utf-8",
        "Application/JSON",
        "application/problem+json",
    ],
)
async def test_utf8_or_no_charset_is_accepted(
    base: str, http: aiohttp.ClientSession, content_type: str
) -> None:
    body = orjson.dumps(event())
    headers = {"Content-Type": content_type}
    async with http.post(f"{base}/api/workflows/progress", data=body, headers=headers) as response:
        assert response.status == 202, await response.text()


@pytest.mark.parametrize("content_type", sorted(PLAIN_JSON))
def test_headers_taken_as_they_are_parse_as_json_in_utf8(content_type: str) -> None:
    # Those headers skip aiohttp's parse: it must say what they are taken for.
    media_type, options = parse_content_type(content_type)
    assert media_type == "application/json"
    assert options.get("charset", "utf-8").lower() == "utf-8"


@pytest.mark.parametrize("charset", ["latin-1", "utf-16", "iso-8859-1", "ascii", "utf8"])
async def test_other_charsets_are_415(base: str, http: aiohttp.ClientSession, charset: str) -> None:
    headers = {"Content-Type": f"application/json; charset={charset}"}
    url = f"{base}/api/workflows/progress"
    for path in ("", "/batch"):
        data = orjson.dumps([event()] if path else event())
        async with http.post(url + path, data=data, headers=headers) as response:
            assert response.status == 415
            answer = await response.json()
        assert answer["error"] == "unsupported_media_type"
        assert "utf-8" in answer["message"]


async def test_a_body_of_many_mistakes_gets_a_short_answer(
    base: str, http: aiohttp.ClientSession
) -> None:
    body = event()
    size, number = len(orjson.dumps(body)), 0
    while size < 980_000:  # counted as it grows: encoding the body every time is quadratic
        name = f"unknown_field_{number}"
        body[name] = number
        size += len(f'"{name}":{number},')
        number += 1
    data = orjson.dumps(body)
    assert 980_000 <= len(data) < 1_000_000
    headers = {"Content-Type": "application/json"}
    async with http.post(f"{base}/api/workflows/progress", data=data, headers=headers) as response:
        assert response.status == 422
        raw = await response.read()
    assert len(raw) < 5_000
    detail = orjson.loads(raw)["detail"]
    assert len(detail) == MAX_DETAIL_ITEMS + 1
    assert detail[-1] == {
        "field": "...",
        "message": f"{number - MAX_DETAIL_ITEMS} more problems not listed",
    }


async def test_long_field_names_are_shortened(base: str, http: aiohttp.ClientSession) -> None:
    body = {**event(), "k" * 100_000: 1}
    async with http.post(f"{base}/api/workflows/progress", json=body) as response:
        assert response.status == 422
        raw = await response.read()
    assert len(raw) < 2_000
    [item] = orjson.loads(raw)["detail"]
    assert item["field"] == "k" * MAX_DETAIL_FIELD_CHARS + "..."


async def test_an_error_frame_lists_few_problems(base: str, http: aiohttp.ClientSession) -> None:
    frame = {"action": "subscribe", "workflow_type": "map"}
    frame.update({f"extra_{n}": "x" for n in range(1_000)})
    async with http.ws_connect(f"{base}/ws") as ws:
        await ws.send_str(orjson.dumps(frame).decode())
        answer = await receive(ws)
    assert answer["code"] == "invalid_message"
    assert len(answer["detail"]) == MAX_DETAIL_ITEMS + 1
    assert answer["detail"][-1]["message"] == f"{1_000 - MAX_DETAIL_ITEMS} more problems not listed"


def test_a_client_leaving_mid_upload_is_not_a_store_failure(
    start_gateway: Callable[..., Gateway], redis_url: str
) -> None:
    gateway = start_gateway(redis_url)
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
            sock.sendall(
                b"POST /api/workflows/progress HTTP/1.1\r\nHost: relay\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                b'{"session_id": "s1", '
            )

    def metrics() -> str:
        with urllib.request.urlopen(f"{gateway.url}/metrics", timeout=5) as response:
            return str(response.read().decode())

    counted = 'relay_requests_rejected_total{reason="client_disconnected"} 3.0'
    wait_until(lambda: counted in metrics(), what="three disconnected uploads counted")
    assert 'reason="unavailable"' not in metrics()
    assert "store unavailable" not in gateway.logs()

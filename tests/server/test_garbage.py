"""Generated garbage at every input: the gateway answers with documented errors and carries on."""

from __future__ import annotations

import asyncio
import http.client
import json
import urllib.request

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import RedisServer
from tests.helpers import Gateway, event, receive

DOCUMENTED = {400, 413, 415, 422}
EXAMPLES = settings(
    max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)


@pytest.fixture(scope="module")
def gateway(module_gateway: Gateway) -> Gateway:
    return module_gateway


def post(
    gateway: Gateway, body: bytes, content_type: str = "application/json"
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        connection.request(
            "POST", "/api/workflows/progress", body=body, headers={"Content-Type": content_type}
        )
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def assert_still_serves(gateway: Gateway) -> None:
    status, answer = post(gateway, orjson.dumps(event(session_id="after-garbage")))
    assert status == 202, answer


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        "session_id": st.one_of(st.text(max_size=140), json_values),
        "workflow_type": st.one_of(st.sampled_from(["map", "Map", "", "*"]), json_values),
        "step": st.one_of(st.text(max_size=140), json_values),
        "progress": st.one_of(st.floats(), st.integers(), st.text(max_size=5)),
        "metadata": json_values,
        "status": st.one_of(st.sampled_from(["running", "failed", "done"]), json_values),
        "extra": json_values,
    },
)


@EXAMPLES
@given(body=st.one_of(st.binary(max_size=300), event_like.map(lambda d: json.dumps(d).encode())))
def test_http_garbage_gets_documented_errors(gateway: Gateway, body: bytes) -> None:
    status, answer = post(gateway, body)
    if status == 202:
        return  # the generator found a valid event
    assert status in DOCUMENTED, (status, answer)
    decoded = orjson.loads(answer)
    assert set(decoded) == {"error", "message", "detail"}


@EXAMPLES
@given(content_type=st.sampled_from(["text/plain", "application/x-www-form-urlencoded", ""]))
def test_wrong_content_type(gateway: Gateway, content_type: str) -> None:
    status, _ = post(gateway, orjson.dumps(event()), content_type)
    assert status == 415


def test_http_survives_the_garbage(gateway: Gateway) -> None:
    assert_still_serves(gateway)


async def _ws_round(gateway: Gateway, frames: list[str | bytes]) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(gateway.ws_url) as ws:
        for frame in frames:
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:
                await ws.send_str(frame)
        await ws.send_json({"action": "ping"})
        while True:  # every frame gets an answer; the ping's pong comes last
            answer = await receive(ws)
            if answer == {"type": "pong"}:
                return
            assert answer["type"] in {"error", "subscribed", "unsubscribed", "cancel_requested"}


@EXAMPLES
@given(
    frames=st.lists(
        st.one_of(
            st.text(max_size=200),
            st.binary(max_size=50),
            json_values.map(lambda v: json.dumps(v)),
            st.fixed_dictionaries(
                {"action": st.sampled_from(["subscribe", "unsubscribe", "cancel", "auth", "x"])},
                optional={
                    "workflow_type": json_values,
                    "session_id": json_values,
                    "since": json_values,
                },
            ).map(lambda v: json.dumps(v)),
        ),
        max_size=5,
    )
)
def test_websocket_garbage_gets_error_frames_and_the_connection_stays(
    gateway: Gateway, frames: list[str | bytes]
) -> None:
    asyncio.run(_ws_round(gateway, frames))


@EXAMPLES
@given(
    fields=st.dictionaries(
        st.text(min_size=1, max_size=12), st.text(max_size=40), min_size=1, max_size=6
    )
)
def test_raw_stream_garbage_is_skipped(
    gateway: Gateway, redis_server: RedisServer, fields: dict[str, str]
) -> None:
    with redis_server.client() as client:
        client.xadd("workflow:progress:garbage", fields)


def test_the_reader_carries_on_after_raw_garbage(
    gateway: Gateway, redis_server: RedisServer
) -> None:
    async def check() -> None:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(gateway.ws_url + "?workflow_type=garbage") as ws,
        ):
            await ws.receive(timeout=10)  # subscribed
            with redis_server.client() as client:
                good = client.xadd(
                    "workflow:progress:garbage", {"session_id": "ok", "step": "a", "progress": "1"}
                )
            while True:
                frame = await receive(ws)
                if frame.get("id") == good:
                    return

    asyncio.run(check())
    assert_still_serves(gateway)
    with urllib.request.urlopen(f"{gateway.url}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    [invalid] = [
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("relay_invalid_entries_total ")
    ]
    assert invalid > 0  # the garbage was seen, skipped and counted

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
from prometheus_client.parser import text_string_to_metric_families

from relay.protocol.entries import EntryError, event_from_entry
from tests.conftest import RedisServer
from tests.helpers import Gateway, event, receive, wait_until

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


GARBAGE_STREAM = "workflow:progress:garbage"


def entry_counts(gateway: Gateway) -> tuple[float, float]:
    """The gateway's count of invalid entries skipped, and of valid ``garbage`` events read."""
    with urllib.request.urlopen(f"{gateway.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    invalid = read = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "relay_invalid_entries_total":
                invalid = sample.value
            elif sample.name == "relay_events_read_total" and sample.labels == {
                "workflow_type": "garbage"
            }:
                read = sample.value
    return invalid, read


def is_event(fields: dict[str, str]) -> bool:
    """Whether the gateway takes this raw entry as an event (the rules of every publisher)."""
    try:
        event_from_entry("garbage", "1-0", fields)
    except EntryError:
        return False
    return True


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


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"\xff\xfe", b"[]", b'{"progress": NaN}', b"[" * 5_000, b'"' + b"x" * 10_000],
)
def test_http_serves_on_after_garbage(gateway: Gateway, body: bytes) -> None:
    status, answer = post(gateway, body)
    assert status in DOCUMENTED, (status, answer)
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
def test_raw_stream_garbage_is_skipped_and_counted(
    gateway: Gateway, redis_server: RedisServer, fields: dict[str, str]
) -> None:
    invalid, read = entry_counts(gateway)
    with redis_server.client() as client:
        client.xadd(GARBAGE_STREAM, fields)

    def entry_read() -> bool:
        now_invalid, now_read = entry_counts(gateway)
        return now_invalid + now_read > invalid + read

    wait_until(entry_read, what="the reader to read the entry")
    # Counted once, as what it is: skipped as invalid, or read as the event it happens to be.
    expected = (invalid, read + 1) if is_event(fields) else (invalid + 1, read)
    assert entry_counts(gateway) == expected


# Each one is wrong in its own way; none may reach a subscriber or stop the reader.
RAW_GARBAGE = [
    {"step": "a", "progress": "1"},
    {"session_id": "bad", "step": "a", "progress": "x"},
    {"session_id": "bad", "step": "a", "progress": "500"},
    {"session_id": "bad", "step": "a", "progress": "1", "metadata": "{not json"},
    {"session_id": "bad", "step": "a", "progress": "1", "status": "done"},
    {"session_id": "bad space", "step": "a", "progress": "1"},
]


def test_the_reader_carries_on_after_raw_garbage(
    gateway: Gateway, redis_server: RedisServer
) -> None:
    invalid_before, _ = entry_counts(gateway)

    async def check() -> tuple[set[str], list[str]]:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(gateway.ws_url + "?workflow_type=garbage") as ws,
        ):
            assert (await receive(ws))["type"] == "subscribed"
            with redis_server.client() as client:
                garbage = {client.xadd(GARBAGE_STREAM, fields) for fields in RAW_GARBAGE}
                good = client.xadd(
                    GARBAGE_STREAM, {"session_id": "ok", "step": "a", "progress": "1"}
                )
            seen: list[str] = []
            while not seen or seen[-1] != good:
                frame = await receive(ws)
                if "event" in frame:
                    seen.append(frame["id"])
            return garbage, seen

    garbage, seen = asyncio.run(check())
    assert not garbage & set(seen), "an invalid entry reached a subscriber"
    invalid_after, _ = entry_counts(gateway)
    # The good entry came after the garbage in the stream, so all of it was read by now.
    assert invalid_after - invalid_before == len(RAW_GARBAGE)
    assert_still_serves(gateway)

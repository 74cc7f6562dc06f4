"""Every answer the OpenAPI document lists, provoked for real and checked against it.

Each scenario below makes one endpoint give one documented answer. The
answer must validate against the model it is documented with and against the
served document (media type, body schema, headers), and the scenarios must
cover exactly the documented answers: a documented status no endpoint gives
fails as surely as an answer that is not documented.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import jsonschema_rs
import orjson
import pytest
from multidict import CIMultiDict
from pydantic import TypeAdapter

from relay.server.answers import BatchAnswer, PublishAnswer, batch_answer, publish_answer
from relay.server.auth import mint_token
from relay.server.openapi import Operation, operations
from relay.server.settings import Settings
from tests.conftest import RedisServer
from tests.helpers import event, serving, until

PUBLISH = "/api/workflows/progress"
BATCH = "/api/workflows/progress/batch"
SESSIONS = "/api/workflows/sessions"
EVENTS = "/api/workflows/events"
KEY = "publisher-key-1"
SECRET = "test-secret-with-enough-length-for-hs256"
ORIGIN = "https://app.example"
GUARDED: dict[str, Any] = {"api_keys": KEY, "token_secret": SECRET}
JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Answered:
    """What the gateway answered: status, headers and the body (empty for streams)."""

    status: int
    headers: CIMultiDict[str]
    body: bytes = b""


class Client:
    """Requests to one in-process gateway."""

    def __init__(self, base: str, http: aiohttp.ClientSession, store: RedisServer) -> None:
        self.base = base
        self.http = http
        self.store = store

    async def call(self, method: str, path: str, **kwargs: Any) -> Answered:
        async with self.http.request(method, self.base + path, **kwargs) as response:
            return Answered(response.status, CIMultiDict(response.headers), await response.read())

    async def publish(self, session_id: str = "s1", **fields: Any) -> Any:
        answered = await self.call("POST", PUBLISH, json=event(session_id, **fields))
        assert answered.status == 202, answered
        return orjson.loads(answered.body)

    async def opened(self, path: str, **kwargs: Any) -> Answered:
        """The answer's head only: the body of an event stream never ends."""
        async with self.http.get(self.base + path, **kwargs) as response:
            return Answered(response.status, CIMultiDict(response.headers))

    @asynccontextmanager
    async def streaming(self) -> AsyncIterator[None]:
        """Hold one event stream open (and counted) for as long as the context lasts."""
        async with self.http.get(self.base + EVENTS) as response:
            assert response.status == 200
            await until(self.subscribed, what="the event stream to be counted")
            yield

    async def subscribed(self) -> bool:
        metrics = (await self.call("GET", "/metrics")).body.decode()
        return "\nrelay_subscribers 1.0\n" in metrics

    async def slow_body(self, path: str) -> Answered:
        """A request whose body never arrives, answered once the gateway gives up on it."""
        address = urlsplit(self.base)
        reader, writer = await asyncio.open_connection(address.hostname, address.port)
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
            "Content-Length: 100\r\n\r\n".encode()
        )
        raw = await asyncio.wait_for(reader.read(), timeout=30)
        writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        status_line, *lines = head.decode().split("\r\n")
        pairs = [line.split(": ", 1) for line in lines]
        headers = CIMultiDict((name, value) for name, value in pairs)
        return Answered(int(status_line.split()[1]), headers, body)


Provoke = Callable[[Client], Awaitable[Answered]]


@dataclass(frozen=True)
class Scenario:
    """One way to make ``operation`` answer ``status``, on a gateway with ``settings``."""

    operation: str
    status: int
    provoke: Provoke
    settings: Mapping[str, Any] = field(default_factory=dict)
    store_down: bool = False

    @property
    def name(self) -> str:
        return self.provoke.__name__


SCENARIOS: list[Scenario] = []


def provokes(
    operation: str, status: int, *, store_down: bool = False, **settings: Any
) -> Callable[[Provoke], Provoke]:
    def register(provoke: Provoke) -> Provoke:
        SCENARIOS.append(Scenario(operation, status, provoke, settings, store_down))
        return provoke

    return register


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


# -- publishing


@dataclass(frozen=True)
class PublishEndpoint:
    """One of the two publish endpoints, which answer alike: one event, or a batch of them."""

    operation: str
    path: str
    batch: bool

    def body(self, fields: dict[str, Any]) -> bytes:
        return orjson.dumps([fields] if self.batch else fields)

    async def post(
        self,
        client: Client,
        fields: dict[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answered:
        body = self.body(fields or event())
        return await client.call("POST", self.path, data=body, headers={**JSON, **(headers or {})})


PUBLISH_ENDPOINTS = (
    PublishEndpoint("publish_one", PUBLISH, batch=False),
    PublishEndpoint("publish_batch", BATCH, batch=True),
)


class PublishProvoke(Protocol):
    """A scenario body for one publish endpoint, which it is given by name."""

    def __call__(self, client: Client, endpoint: PublishEndpoint) -> Awaitable[Answered]: ...


def both_publish(
    status: int, *, store_down: bool = False, **settings: Any
) -> Callable[[PublishProvoke], PublishProvoke]:
    """Register a scenario for each publish endpoint."""

    def register(provoke: PublishProvoke) -> PublishProvoke:
        for endpoint in PUBLISH_ENDPOINTS:
            bound = functools.partial(provoke, endpoint=endpoint)
            functools.update_wrapper(bound, provoke)
            SCENARIOS.append(Scenario(endpoint.operation, status, bound, settings, store_down))
        return provoke

    return register


@both_publish(202)
async def written(client: Client, endpoint: PublishEndpoint) -> Answered:
    return await endpoint.post(client)


@both_publish(202)
async def replayed(client: Client, endpoint: PublishEndpoint) -> Answered:
    await endpoint.post(client, headers=keyed("k1"))
    answered = await endpoint.post(client, headers=keyed("k1"))
    assert answered.headers["Idempotent-Replayed"] == "true"
    return answered


@both_publish(202)
async def cancel_pending(client: Client, endpoint: PublishEndpoint) -> Answered:
    await client.publish()
    await client.call("POST", SESSIONS + "/s1/cancel")
    answered = await endpoint.post(client)
    assert orjson.loads(answered.body)["cancel_requested"] == (["s1"] if endpoint.batch else True)
    return answered


@both_publish(400)
async def not_json(client: Client, endpoint: PublishEndpoint) -> Answered:
    return await client.call("POST", endpoint.path, data=b"{not json", headers=JSON)


@both_publish(401, **GUARDED)
async def without_key(client: Client, endpoint: PublishEndpoint) -> Answered:
    return await endpoint.post(client)


@both_publish(403, **GUARDED)
async def with_wrong_key(client: Client, endpoint: PublishEndpoint) -> Answered:
    return await endpoint.post(client, headers={"Authorization": "Bearer not-the-key"})


@both_publish(408, body_timeout=0.3)
async def body_too_slow(client: Client, endpoint: PublishEndpoint) -> Answered:
    return await client.slow_body(endpoint.path)


@both_publish(409)
async def session_ended(client: Client, endpoint: PublishEndpoint) -> Answered:
    await client.publish(status="completed")
    return await endpoint.post(client)


@both_publish(409)
async def key_reused(client: Client, endpoint: PublishEndpoint) -> Answered:
    await endpoint.post(client, headers=keyed("k1"))
    return await endpoint.post(client, event(progress=50), headers=keyed("k1"))


@both_publish(413, max_body_bytes=1024)
async def body_too_large(client: Client, endpoint: PublishEndpoint) -> Answered:
    return await endpoint.post(client, event(metadata={"text": "x" * 2000}))


@both_publish(415)
async def not_json_type(client: Client, endpoint: PublishEndpoint) -> Answered:
    body = endpoint.body(event())
    return await client.call(
        "POST", endpoint.path, data=body, headers={"Content-Type": "text/plain"}
    )


@both_publish(422)
async def invalid_event(client: Client, endpoint: PublishEndpoint) -> Answered:
    return await endpoint.post(client, event(progress=101))


@both_publish(422)
async def invalid_key(client: Client, endpoint: PublishEndpoint) -> Answered:
    return await endpoint.post(client, headers=keyed("k" * 256))


@both_publish(429, publish_rate=0.001, publish_burst=1)
async def over_the_rate(client: Client, endpoint: PublishEndpoint) -> Answered:
    await endpoint.post(client)
    return await endpoint.post(client)


@both_publish(503, store_down=True)
async def store_down(client: Client, endpoint: PublishEndpoint) -> Answered:
    client.store.stop()
    return await endpoint.post(client)


@provokes("publish_batch", 413, max_batch=2)
async def batch_too_long(client: Client) -> Answered:
    return await client.call("POST", BATCH, json=[event(), event(), event()])


# -- sessions


@provokes("list_sessions", 200)
async def sessions_listed(client: Client) -> Answered:
    await client.publish("s1", metadata={"estimated_time_remaining": 12.5})
    await client.publish("s2", status="failed", error="out of tiles")
    answered = await client.call("GET", SESSIONS)
    assert len(orjson.loads(answered.body)) == 2, answered
    return answered


@provokes("get_session", 200)
async def session_found(client: Client) -> Answered:
    await client.publish(progress=10)
    await client.publish(progress=55.5, step="texturing")
    return await client.call("GET", SESSIONS + "/s1")


@provokes("session_events", 200)
async def history_listed(client: Client) -> Answered:
    first = await client.publish(progress=10)
    await client.publish(progress=20)
    await client.publish(progress=30, status="completed")
    answered = await client.call("GET", SESSIONS + "/s1/events", params={"since": first["id"]})
    assert len(orjson.loads(answered.body)) == 2, answered
    return answered


# -- streams


@provokes("events", 200)
async def stream_opened(client: Client) -> Answered:
    return await client.opened(EVENTS, params={"workflow_type": "map"})


@provokes("events", 503, max_connections=1)
async def stream_at_capacity(client: Client) -> Answered:
    async with client.streaming():
        return await client.call("GET", EVENTS)


@provokes("websocket", 101)
async def socket_opened(client: Client) -> Answered:
    # ws_connect succeeds on a 101 answer only, and raises on any other.
    async with client.http.ws_connect(client.base + "/ws") as ws:
        await ws.close()
    return Answered(101, CIMultiDict())


@provokes("websocket", 503, max_connections=1)
async def socket_at_capacity(client: Client) -> Answered:
    async with client.streaming():
        return await client.call("GET", "/ws")


@provokes("readyz", 503, store_down=True)
async def not_ready(client: Client) -> Answered:
    client.store.stop()
    return await client.call("GET", "/readyz")


# -- answers to a single request, maybe after a publish


def request(name: str, method: str, path: str, **kwargs: Any) -> Provoke:
    """A scenario that is one request, with aiohttp's ``kwargs``."""

    async def provoke(client: Client) -> Answered:
        return await client.call(method, path, **kwargs)

    provoke.__name__ = name
    return provoke


def after_publish(
    name: str, method: str, path: str, *, stop_store: bool = False, **fields: Any
) -> Provoke:
    """A scenario that is one request after an event of session s1 with ``fields`` is published."""

    async def provoke(client: Client) -> Answered:
        await client.publish(**fields)
        if stop_store:
            client.store.stop()
        return await client.call(method, path)

    provoke.__name__ = name
    return provoke


WRONG_KEY = {"Authorization": "Bearer not-the-key"}
NOT_GRANTED = {"workflow_type": "map", "token": mint_token(SECRET, "alice", workflow_types=["c"])}
OTHER_ORIGIN = {"Origin": "https://elsewhere.example"}
SCENARIOS += [
    Scenario("list_sessions", 401, request("no_token", "GET", SESSIONS), GUARDED),
    Scenario("list_sessions", 422, request("bad_limit", "GET", SESSIONS, params={"limit": "0"})),
    Scenario("get_session", 401, request("no_token", "GET", SESSIONS + "/s1"), GUARDED),
    Scenario("get_session", 404, request("unknown", "GET", SESSIONS + "/nobody")),
    Scenario("get_session", 422, request("bad_id", "GET", SESSIONS + "/bad%20id")),
    Scenario("session_events", 401, request("no_token", "GET", SESSIONS + "/s1/events"), GUARDED),
    Scenario("session_events", 404, request("unknown", "GET", SESSIONS + "/nobody/events")),
    Scenario(
        "session_events",
        422,
        request("bad_since", "GET", SESSIONS + "/s1/events", params={"since": "yesterday"}),
    ),
    Scenario(
        "cancel_session", 401, request("no_credential", "POST", SESSIONS + "/s1/cancel"), GUARDED
    ),
    Scenario(
        "cancel_session",
        403,
        request("wrong_key", "POST", SESSIONS + "/s1/cancel", headers=WRONG_KEY),
        GUARDED,
    ),
    Scenario("cancel_session", 202, after_publish("running", "POST", SESSIONS + "/s1/cancel")),
    Scenario(
        "cancel_session",
        409,
        after_publish("ended", "POST", SESSIONS + "/s1/cancel", status="completed"),
    ),
    Scenario(
        "cancel_session",
        503,
        after_publish("store_down", "POST", SESSIONS + "/s1/cancel", stop_store=True),
        store_down=True,
    ),
    Scenario(
        "session_events",
        503,
        after_publish("store_down", "GET", SESSIONS + "/s1/events", stop_store=True),
        store_down=True,
    ),
    Scenario("cancel_session", 404, request("unknown", "POST", SESSIONS + "/nobody/cancel")),
    Scenario("cancel_session", 422, request("bad_id", "POST", SESSIONS + "/bad%20id/cancel")),
    Scenario("events", 401, request("no_token", "GET", EVENTS), GUARDED),
    Scenario("events", 403, request("not_granted", "GET", EVENTS, params=NOT_GRANTED), GUARDED),
    Scenario("events", 422, request("bad_type", "GET", EVENTS, params={"workflow_type": "Map!"})),
    Scenario("websocket", 400, request("no_upgrade", "GET", "/ws")),
    Scenario(
        "websocket",
        403,
        request("other_origin", "GET", "/ws", headers=OTHER_ORIGIN),
        {"allowed_origins": ORIGIN},
    ),
    Scenario(
        "websocket",
        422,
        request("since_any_type", "GET", "/ws", params={"workflow_type": "*", "since": "1-0"}),
    ),
    Scenario("healthz", 200, request("alive", "GET", "/healthz")),
    Scenario("readyz", 200, request("ready", "GET", "/readyz")),
    Scenario("metrics", 200, request("metrics", "GET", "/metrics")),
    Scenario("metrics", 401, request("no_token", "GET", "/metrics"), {"metrics_token": "m"}),
    Scenario("openapi", 200, request("document", "GET", "/openapi.json")),
    Scenario("dashboard", 200, request("page", "GET", "/")),
    Scenario("browser_client", 200, request("module", "GET", "/static/relay-client.js")),
]


def documented_answers() -> set[tuple[str, int]]:
    return {(op.operation_id, status) for op in operations(Settings()) for status in op.answers}


def test_the_scenarios_provoke_every_documented_answer_and_no_other() -> None:
    provoked = {(scenario.operation, scenario.status) for scenario in SCENARIOS}
    assert provoked == documented_answers()


def header_value(text: str, schema: dict[str, Any]) -> Any:
    return int(text) if schema.get("type") == "integer" and text.isdigit() else text


def check_against_document(
    answered: Answered, document: dict[str, Any], operation: Operation
) -> None:
    """The answer is one the served document lists, with its media type, schema and headers."""
    responses = document["paths"][operation.path][operation.method]["responses"]
    documented = responses[str(answered.status)]
    components = {"components": document["components"]}
    for name, header in documented.get("headers", {}).items():
        value = answered.headers.get(name)
        if value is None:
            assert not header.get("required"), f"{name} is missing"
            continue
        schema = header["schema"]
        assert jsonschema_rs.is_valid(schema, header_value(value, schema)), (name, value)
    if "content" not in documented:
        return
    ((media_type, content),) = documented["content"].items()
    assert answered.headers["Content-Type"].split(";")[0] == media_type
    if media_type == "application/json":
        schema = {**content["schema"], **components}
        jsonschema_rs.validate(schema, orjson.loads(answered.body))


def check_against_model(answered: Answered, operation: Operation) -> None:
    """A JSON answer validates, strictly, as the model it is documented with."""
    answer = operation.answers[answered.status]
    if answer.media_type == "application/json":
        TypeAdapter(answer.body).validate_json(answered.body, strict=True)


async def provoke_and_check(scenario: Scenario, store: RedisServer) -> None:
    settings = Settings(redis_url=store.url, read_block_ms=100, **scenario.settings)
    [operation] = [op for op in operations(settings) if op.operation_id == scenario.operation]
    async with serving(settings) as base, aiohttp.ClientSession() as http:
        client = Client(base, http, store)
        document = orjson.loads((await client.call("GET", "/openapi.json")).body)
        answered = await scenario.provoke(client)
    assert answered.status == scenario.status, answered
    check_against_document(answered, document, operation)
    check_against_model(answered, operation)


def scenarios(*, store_down: bool) -> pytest.MarkDecorator:
    chosen = [s for s in SCENARIOS if s.store_down == store_down]
    return pytest.mark.parametrize(
        "scenario", chosen, ids=[f"{s.operation}-{s.status}-{s.name}" for s in chosen]
    )


@scenarios(store_down=False)
async def test_answer_is_documented_and_valid(
    scenario: Scenario, redis_url: str, redis_server: RedisServer
) -> None:
    await provoke_and_check(scenario, redis_server)


@scenarios(store_down=True)
async def test_answer_with_the_store_down_is_documented_and_valid(
    scenario: Scenario, own_redis: RedisServer
) -> None:
    await provoke_and_check(scenario, own_redis)


def test_the_publish_answers_built_by_hand_are_the_models_dumps() -> None:
    entry_id, name = "1700000000000-0", "workflow:progress:map"
    for cancel in (False, True):
        model = PublishAnswer(id=entry_id, event=name, cancel_requested=cancel)
        assert publish_answer(entry_id, name, cancel) == model.model_dump()
    batch = BatchAnswer(ids=[entry_id, "1700000000000-1"], cancel_requested=["s1"])
    assert batch_answer([entry_id, "1700000000000-1"], ["s1"]) == batch.model_dump()

"""``GET /openapi.json``: the HTTP API described as OpenAPI 3.1, generated from its models.

Request bodies, answers and query parameters are described by the pydantic
models that validate them or that the endpoints answer with
(:class:`~relay.protocol.event.ProgressEvent`, :mod:`relay.server.answers`,
the query models of :mod:`relay.server.http_sessions`,
:class:`~relay.protocol.frames.Subscribe`), and limits come from the settings
of the gateway serving the document. What this module writes itself is what
no model can say: which answers each endpoint gives, and when.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Annotated, Any

import orjson
from aiohttp import web
from pydantic import BaseModel, Field, TypeAdapter

from relay.protocol.event import ProgressEvent
from relay.protocol.frames import ANY_TYPE, Subscribe
from relay.protocol.idempotency import IDEMPOTENCY_HEADER, MAX_KEY_CHARS, REPLAYED_HEADER
from relay.server.answers import (
    BatchAnswer,
    CancelAnswer,
    ErrorAnswer,
    EventFrame,
    HealthAnswer,
    NotReadyAnswer,
    PublishAnswer,
    ReadyAnswer,
    SessionStateAnswer,
)
from relay.server.gateway import GATEWAY
from relay.server.http_sessions import HistoryQuery, SessionPath, SessionsQuery
from relay.server.settings import Settings

JSON = "application/json"
REF = "#/components/schemas/{model}"

routes = web.RouteTableDef()


@dataclass(frozen=True, slots=True)
class Answer:
    """One answer an operation gives: when, in which media type, with what body and headers.

    ``body`` is the type a JSON body validates as (a model, or a list of one);
    a text body is a string. Without ``media_type`` the answer has no body.
    """

    description: str
    body: Any = None
    media_type: str | None = JSON
    headers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Query:
    """Query parameters from the fields of ``model``, but those in ``exclude``.

    Every query parameter of this API may be left out. ``defaults`` states
    what the endpoint assumes for a missing one where the model has no
    default.
    """

    model: type[BaseModel]
    exclude: frozenset[str] = frozenset()
    defaults: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Operation:
    """One method on one path: its inputs, and every answer it gives (see :func:`operations`).

    ``security`` names the credentials it reads; presenting none is always
    allowed too, for a gateway that requires none.
    """

    method: str
    path: str
    operation_id: str
    summary: str
    answers: Mapping[int, Answer]
    path_params: type[BaseModel] | None = None
    query: Query | None = None
    headers: tuple[dict[str, Any], ...] = ()
    body: Any = None
    body_description: str = ""
    security: tuple[str, ...] = ()


# Headers the answers carry, by name.
RESPONSE_HEADERS: dict[str, dict[str, Any]] = {
    REPLAYED_HEADER: {
        "description": "true when this is the recorded answer of an earlier publish.",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    },
    "WWW-Authenticate": {
        "description": "The credential to present: a bearer one.",
        "required": True,
        "schema": {"type": "string"},
    },
}

# Why each status is answered, where every endpoint answering it means the same.
REASONS = {
    400: "The body is empty or not JSON.",
    401: "A credential is required, or the one presented is not valid.",
    403: "The credential does not allow this.",
    404: "No such session, or none the credential may see: the two look alike on purpose.",
    409: "The session has already ended.",
    415: "The content type is not JSON, or its charset is not UTF-8.",
    422: "The input breaks a rule; detail names each field.",
    429: "Over the publish rate.",
    503: "The store is unavailable.",
}

# The headers every answer of a status carries.
STATUS_HEADERS = {401: ("WWW-Authenticate",), 429: ("Retry-After",), 503: ("Retry-After",)}


def errors(*statuses: int, because: Mapping[int, str] | None = None) -> dict[int, Answer]:
    """Error answers of ``statuses``; ``because`` says why where :data:`REASONS` does not fit."""
    reasons = {**REASONS, **(because or {})}
    return {
        status: Answer(reasons[status], ErrorAnswer, headers=STATUS_HEADERS.get(status, ()))
        for status in statuses
    }


IDEMPOTENCY_KEY = {
    "name": IDEMPOTENCY_HEADER,
    "in": "header",
    "required": False,
    "description": "Names this publish: a retry under the same key within the idempotency "
    "window writes nothing and answers the first answer's ids.",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_CHARS, "pattern": "^[ -~]+$"},
}
LAST_EVENT_ID = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "description": "Sent by a reconnecting EventSource: read as since when the query names "
    "one workflow type and no since, else ignored.",
    "schema": {"type": "string"},
}
# The subscription a streaming endpoint's query names, as a subscribe frame would.
SUBSCRIPTION_QUERY = Query(Subscribe, exclude=frozenset({"action"}))
EVENT_STREAM = "text/event-stream"
TEXT = "text/plain"
SUBSCRIBER = ("bearer", "token")


def _publishing(settings: Settings, operation: Operation, *, too_large: str) -> Operation:
    """A publish endpoint: what both take besides their body, and the errors both answer."""
    (accepted,) = operation.answers.values()
    return replace(
        operation,
        answers={202: replace(accepted, headers=(REPLAYED_HEADER,))}
        | errors(
            *(400, 401, 403, 408, 409, 413, 415, 422, 429, 503),
            because={
                408: f"The body took longer than {settings.body_timeout:g} seconds to arrive; "
                "the connection is closed.",
                409: "The session has already ended, or the idempotency key was used for other "
                "events (idempotency_key_reused).",
                413: too_large,
                422: "The input breaks a rule, or the idempotency key does; detail names each "
                "field.",
            },
        ),
        headers=(IDEMPOTENCY_KEY,),
        security=("bearer",),
    )


def operations(settings: Settings) -> list[Operation]:
    """Every operation of the HTTP API of a gateway with ``settings``, with all its answers."""
    max_body, max_batch = settings.max_body_bytes, settings.max_batch
    # Refusals before a stream starts; a WebSocket reads its token after the upgrade.
    stream_refusals = {
        403: "The origin is not allowed, or the token does not grant the subscription.",
        422: "The subscription the query names breaks a rule; detail names each field.",
        503: "This gateway holds as many streaming connections as it may.",
    }
    # On a port of its own, /metrics is not part of the API this document describes.
    metrics = (
        []
        if settings.metrics_apart
        else [
            Operation(
                "get",
                "/metrics",
                "metrics",
                "Prometheus metrics",
                {200: Answer("Metrics.", str, TEXT)}
                | errors(401, because={401: "The metrics token is required, or wrong."}),
                security=("metrics",),
            )
        ]
    )
    return [
        _publishing(
            settings,
            Operation(
                "post",
                "/api/workflows/progress",
                "publish_one",
                "Publish one event",
                {202: Answer("Written to its type's stream.", PublishAnswer)},
                body=ProgressEvent,
                body_description=f"One event, at most {max_body} bytes of JSON.",
            ),
            too_large=f"The body is larger than {max_body} bytes.",
        ),
        _publishing(
            settings,
            Operation(
                "post",
                "/api/workflows/progress/batch",
                "publish_batch",
                "Publish events, all or none",
                {202: Answer("All written.", BatchAnswer)},
                body=Annotated[list[ProgressEvent], Field(max_length=max_batch)],
                body_description=f"At most {max_batch} events, at most {max_body} bytes of JSON.",
            ),
            too_large=f"The body is larger than {max_body} bytes, or holds more than "
            f"{max_batch} events.",
        ),
        Operation(
            "get",
            "/api/workflows/sessions",
            "list_sessions",
            "Recent sessions, most recently updated first",
            {200: Answer("Session states.", list[SessionStateAnswer])} | errors(401, 422),
            query=Query(SessionsQuery),
            security=SUBSCRIBER,
        ),
        Operation(
            "get",
            "/api/workflows/sessions/{session_id}",
            "get_session",
            "Latest state of one session",
            {200: Answer("The session's state.", SessionStateAnswer)} | errors(401, 404, 422),
            path_params=SessionPath,
            security=SUBSCRIBER,
        ),
        Operation(
            "get",
            "/api/workflows/sessions/{session_id}/events",
            "session_events",
            "A session's latest events, oldest first",
            {200: Answer("Event frames, as a WebSocket receives them.", list[EventFrame])}
            | errors(401, 404, 422, 503),
            path_params=SessionPath,
            query=Query(HistoryQuery),
            security=SUBSCRIBER,
        ),
        Operation(
            "post",
            "/api/workflows/sessions/{session_id}/cancel",
            "cancel_session",
            "Ask the session's worker to stop",
            {202: Answer("A cancel_requested event was published, or is pending.", CancelAnswer)}
            | errors(401, 403, 404, 409, 422, 503),
            path_params=SessionPath,
            security=SUBSCRIBER,
        ),
        Operation(
            "get",
            "/api/workflows/events",
            "events",
            "Server-Sent Events, resumable with Last-Event-ID",
            {200: Answer("An endless event stream.", str, EVENT_STREAM)}
            | errors(401, 403, 422, 503, because=stream_refusals),
            query=replace(SUBSCRIPTION_QUERY, defaults={"workflow_type": ANY_TYPE}),
            headers=(LAST_EVENT_ID,),
            security=SUBSCRIBER,
        ),
        Operation(
            "get",
            "/ws",
            "websocket",
            "WebSocket subscriptions; the query may name the first",
            {
                101: Answer("Switching to WebSocket.", media_type=None),
                400: Answer("Not a WebSocket handshake.", str, TEXT),
            }
            | errors(403, 422, 503, because=stream_refusals | {403: "The origin is not allowed."}),
            query=SUBSCRIPTION_QUERY,
            security=SUBSCRIBER,
        ),
        Operation("get", "/healthz", "healthz", "Alive", {200: Answer("Alive.", HealthAnswer)}),
        Operation(
            "get",
            "/readyz",
            "readyz",
            "Ready: the store accepts writes and the reader follows the streams",
            {
                200: Answer("Ready.", ReadyAnswer),
                503: Answer(
                    "Not ready; problems say why.", NotReadyAnswer, headers=("Retry-After",)
                ),
            },
        ),
        *metrics,
        Operation(
            "get",
            "/openapi.json",
            "openapi",
            "This document",
            {200: Answer("OpenAPI 3.1.", dict[str, Any])},
        ),
        Operation(
            "get",
            "/",
            "dashboard",
            "The live dashboard",
            {200: Answer("The page.", str, "text/html")},
        ),
        Operation(
            "get",
            "/static/relay-client.js",
            "browser_client",
            "The browser client, an ES module (the npm package relay-progress-client)",
            {200: Answer("The module.", str, "text/javascript")},
        ),
    ]


class _Schemas:
    """The component schemas of a document, collected from every model it names."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def _add(self, name: str, schema: dict[str, Any]) -> None:
        known = self.components.setdefault(name, schema)
        if known != schema:
            raise ValueError(f"two different schemas are named {name}")

    def _collected(self, schema: dict[str, Any]) -> dict[str, Any]:
        for name, definition in schema.pop("$defs", {}).items():
            self._add(name, definition)
        return schema

    def of(self, body: Any) -> dict[str, Any]:
        """The schema of ``body`` (a model: a reference to its component)."""
        if isinstance(body, type) and issubclass(body, BaseModel):
            self._add(body.__name__, self._collected(body.model_json_schema(ref_template=REF)))
            return {"$ref": REF.format(model=body.__name__)}
        return self._collected(TypeAdapter(body).json_schema(ref_template=REF))

    def fields(self, model: type[BaseModel]) -> tuple[dict[str, Any], list[str]]:
        """The property schemas of ``model``, and which of them are required."""
        schema = self._collected(model.model_json_schema(ref_template=REF))
        return schema["properties"], schema.get("required", [])


def _parameter_schema(prop: dict[str, Any]) -> dict[str, Any]:
    """A field's schema as a parameter's: a parameter left out is None, not null."""
    schema = {k: v for k, v in prop.items() if k not in ("title", "description")}
    choices = schema.pop("anyOf", None)
    if choices is not None:
        schema.update(next(c for c in choices if c != {"type": "null"}))
    if schema.get("default", ...) is None:
        del schema["default"]
    return schema


def _parameters(operation: Operation, schemas: _Schemas) -> list[dict[str, Any]]:
    parameters = []
    if operation.path_params is not None:
        properties, _ = schemas.fields(operation.path_params)
        parameters += [
            {"name": name, "in": "path", "required": True, "schema": _parameter_schema(prop)}
            for name, prop in properties.items()
        ]
    if (query := operation.query) is not None:
        properties, _ = schemas.fields(query.model)
        for name, prop in properties.items():
            if name in query.exclude:
                continue
            schema = _parameter_schema(prop)
            if name in query.defaults:
                schema = {**schema, "default": query.defaults[name]}
            parameter = {"name": name, "in": "query", "required": False, "schema": schema}
            if "description" in prop:
                parameter["description"] = prop["description"]
            parameters.append(parameter)
    return parameters + list(operation.headers)


def _answer(answer: Answer, schemas: _Schemas) -> dict[str, Any]:
    rendered: dict[str, Any] = {"description": answer.description}
    if answer.media_type is not None:
        rendered["content"] = {answer.media_type: {"schema": schemas.of(answer.body)}}
    if answer.headers:
        rendered["headers"] = {name: RESPONSE_HEADERS[name] for name in answer.headers}
    return rendered


def _operation(operation: Operation, schemas: _Schemas) -> dict[str, Any]:
    rendered: dict[str, Any] = {"operationId": operation.operation_id, "summary": operation.summary}
    if operation.security:
        rendered["security"] = [{name: []} for name in operation.security] + [{}]
    if parameters := _parameters(operation, schemas):
        rendered["parameters"] = parameters
    if operation.body is not None:
        rendered["requestBody"] = {
            "required": True,
            "description": operation.body_description,
            "content": {JSON: {"schema": schemas.of(operation.body)}},
        }
    rendered["responses"] = {
        str(status): _answer(answer, schemas) for status, answer in operation.answers.items()
    }
    return rendered


@functools.cache
def printable_pattern() -> str:
    """A pattern of exactly the strings :meth:`str.isprintable` accepts, which ``step`` must be.

    Built from Python's own character database, so it states the rule the
    gateway applies. ASCII punctuation is written as ``\\xHH``, which every
    regular expression dialect reads the same inside a character class.
    """
    spans: list[tuple[int, int]] = []
    first: int | None = None
    for code in range(sys.maxunicode + 2):
        printable = code <= sys.maxunicode and chr(code).isprintable()
        if printable and first is None:
            first = code
        elif not printable and first is not None:
            spans.append((first, code - 1))
            first = None

    def char(code: int) -> str:
        return f"\\x{code:02x}" if code < 128 and not chr(code).isalnum() else chr(code)

    return "^[" + "".join(char(a) if a == b else f"{char(a)}-{char(b)}" for a, b in spans) + "]*$"


def document(settings: Settings) -> dict[str, Any]:
    """The OpenAPI document of the HTTP API of a gateway with ``settings``."""
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for operation in operations(settings):
        paths.setdefault(operation.path, {})[operation.method] = _operation(operation, schemas)
    # The model checks step with a validator, which a JSON schema cannot carry.
    for event_model in ("ProgressEvent", "EventData", "PlanStep"):
        schemas.components[event_model]["properties"]["step"]["pattern"] = printable_pattern()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "relay",
            "version": "1",
            "description": "Real-time progress relay. WebSocket frames and SSE messages: "
            "see docs/protocol.md.",
        },
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A publisher key, or a subscriber token.",
                },
                "metrics": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The metrics token.",
                },
                "token": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "token",
                    "description": "A subscriber token.",
                },
            },
        },
        "paths": paths,
    }


@functools.lru_cache(maxsize=4)
def _encoded(settings: Settings) -> bytes:
    return orjson.dumps(document(settings))


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    """This API as an OpenAPI document."""
    body = _encoded(request.app[GATEWAY].settings)
    return web.Response(body=body, content_type=JSON)

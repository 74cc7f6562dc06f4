"""``GET /openapi.json``: the HTTP API described as OpenAPI 3.1.

The event schema comes from the model that validates events, so the document
cannot drift from what the gateway accepts.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, get_args

import orjson
from aiohttp import web

from relay.protocol.event import SESSION_ID_PATTERN, WORKFLOW_TYPE_PATTERN, ProgressEvent, Status
from relay.protocol.idempotency import IDEMPOTENCY_HEADER, MAX_KEY_CHARS, REPLAYED_HEADER
from relay.protocol.stream_ids import STREAM_ID_PATTERN
from relay.server.gateway import GATEWAY
from relay.server.http_sessions import MAX_LIST
from relay.server.settings import Settings

REF = "#/components/schemas/{model}"

routes = web.RouteTableDef()


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "The body is empty or not JSON.",
        401: "A credential is required or was not valid.",
        403: "The credential does not allow this.",
        404: "No such session.",
        408: "The body took longer than RELAY_BODY_TIMEOUT to arrive; the connection is closed.",
        409: "The session has already ended, or the idempotency key was used for other "
        "events (idempotency_key_reused).",
        413: "The body or batch is too large.",
        415: "The content type is not JSON, or its charset is not UTF-8.",
        422: "The input breaks a rule; detail names each field.",
        429: "Over the publish rate; see Retry-After.",
        503: "Redis is unavailable; see Retry-After.",
    }
    return {str(status): _json(_ref("Error"), reasons[status]) for status in statuses}


def _param(name: str, where: str, schema: dict[str, Any], required: bool = False) -> Any:
    return {"name": name, "in": where, "required": required, "schema": schema}


SESSION_PATH = _param(
    "session_id", "path", {"type": "string", "pattern": SESSION_ID_PATTERN}, required=True
)
TOKEN = _param("token", "query", {"type": "string"})
LIMIT = _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": MAX_LIST})
STATUS = {"type": "string", "enum": list(get_args(Status))}
STREAM_ID = {"type": "string", "pattern": STREAM_ID_PATTERN}
PUBLISH_ERRORS = (400, 401, 403, 408, 409, 413, 415, 422, 429, 503)
IDEMPOTENCY_KEY = {
    **_param(
        IDEMPOTENCY_HEADER,
        "header",
        {"type": "string", "minLength": 1, "maxLength": MAX_KEY_CHARS, "pattern": "^[ -~]+$"},
    ),
    "description": "Names this publish: a retry under the same key within the idempotency "
    "window writes nothing and answers the first answer's ids.",
}
REPLAYED = {
    REPLAYED_HEADER: {
        "description": "true when the answer is the recorded one of an earlier publish.",
        "schema": {"type": "string", "enum": ["true"]},
    }
}


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


def _published(schema: str, description: str) -> dict[str, Any]:
    return {**_json(_ref(schema), description), "headers": REPLAYED}


def _schemas() -> dict[str, Any]:
    event = ProgressEvent.model_json_schema(ref_template=REF)
    event["properties"]["step"]["pattern"] = printable_pattern()
    return {
        "ProgressEvent": event,
        "Error": {
            "type": "object",
            "required": ["error", "message", "detail"],
            "properties": {
                "error": {"type": "string"},
                "message": {"type": "string"},
                "detail": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                    },
                },
            },
        },
        "Published": {
            "type": "object",
            "required": ["id", "event", "cancel_requested"],
            "properties": {
                "id": STREAM_ID,
                "event": {"type": "string"},
                "cancel_requested": {"type": "boolean"},
            },
        },
        "PublishedBatch": {
            "type": "object",
            "required": ["ids", "cancel_requested"],
            "properties": {
                "ids": {"type": "array", "items": {"type": "string"}},
                "cancel_requested": {"type": "array", "items": {"type": "string"}},
            },
        },
        "SessionState": {
            "type": "object",
            "properties": {
                "session_id": {"type": "string"},
                "workflow_type": {"type": "string"},
                "step": {"type": "string"},
                "progress": {"type": "number"},
                "status": STATUS,
                "error": {"type": ["string", "null"]},
                "metadata": {"type": "object"},
                "started_at": {"type": "integer"},
                "updated_at": {"type": "integer"},
                "estimated_time_remaining": {"type": ["number", "null"]},
                "last_event_id": {"type": "string"},
            },
        },
        "EventFrame": {
            "type": "object",
            "required": ["event", "id", "data"],
            "properties": {
                "event": {"type": "string"},
                "id": {"type": "string"},
                "data": {"type": "object"},
            },
        },
    }


def document(settings: Settings) -> dict[str, Any]:
    """The OpenAPI document of the HTTP API of a gateway with ``settings``."""
    type_filter = {"type": "string", "pattern": WORKFLOW_TYPE_PATTERN}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "relay",
            "version": "1",
            "description": "Real-time progress relay. WebSocket and SSE: see docs/protocol.md.",
        },
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/api/workflows/progress": {
                "post": {
                    "summary": "Publish one event",
                    "security": [{"bearer": []}, {}],
                    "parameters": [IDEMPOTENCY_KEY],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("ProgressEvent")}},
                    },
                    "responses": {
                        "202": _published("Published", "Written to the type's stream."),
                        **_errors(*PUBLISH_ERRORS),
                    },
                }
            },
            "/api/workflows/progress/batch": {
                "post": {
                    "summary": "Publish events, all or none",
                    "security": [{"bearer": []}, {}],
                    "parameters": [IDEMPOTENCY_KEY],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "array",
                                    "items": _ref("ProgressEvent"),
                                    "maxItems": settings.max_batch,
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": _published("PublishedBatch", "All written."),
                        **_errors(*PUBLISH_ERRORS),
                    },
                }
            },
            "/api/workflows/sessions": {
                "get": {
                    "summary": "Recent sessions, newest first",
                    "parameters": [
                        _param("workflow_type", "query", type_filter),
                        _param("status", "query", STATUS),
                        LIMIT,
                        TOKEN,
                    ],
                    "responses": {
                        "200": _json(
                            {"type": "array", "items": _ref("SessionState")}, "Session states."
                        ),
                        **_errors(401, 422),
                    },
                }
            },
            "/api/workflows/sessions/{session_id}": {
                "get": {
                    "summary": "Latest state of one session",
                    "parameters": [SESSION_PATH, TOKEN],
                    "responses": {
                        "200": _json(_ref("SessionState"), "The session's state."),
                        **_errors(401, 403, 404, 422),
                    },
                }
            },
            "/api/workflows/sessions/{session_id}/events": {
                "get": {
                    "summary": "A session's retained events, oldest first",
                    "parameters": [
                        SESSION_PATH,
                        _param("since", "query", STREAM_ID),
                        LIMIT,
                        TOKEN,
                    ],
                    "responses": {
                        "200": _json({"type": "array", "items": _ref("EventFrame")}, "Events."),
                        **_errors(401, 403, 404, 422),
                    },
                }
            },
            "/api/workflows/sessions/{session_id}/cancel": {
                "post": {
                    "summary": "Ask the session's worker to stop",
                    "security": [{"bearer": []}, {}],
                    "parameters": [SESSION_PATH],
                    "responses": {
                        "202": _json({"type": "object"}, "A cancel_requested event was published."),
                        **_errors(401, 403, 404, 409, 422, 503),
                    },
                }
            },
            "/api/workflows/events": {
                "get": {
                    "summary": "Server-Sent Events, resumable with Last-Event-ID",
                    "parameters": [
                        _param("workflow_type", "query", {"type": "string"}),
                        _param("session_id", "query", {"type": "string"}),
                        _param("since", "query", STREAM_ID),
                        # Read as since when one workflow type is named, else ignored.
                        _param("Last-Event-ID", "header", {"type": "string"}),
                        TOKEN,
                    ],
                    "responses": {
                        "200": {
                            "description": "An endless event stream.",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        **_errors(401, 403, 422),
                    },
                }
            },
            "/ws": {
                "get": {
                    "summary": "WebSocket subscriptions (docs/protocol.md)",
                    "responses": {"101": {"description": "Switching to WebSocket."}},
                }
            },
            "/healthz": {"get": {"responses": {"200": {"description": "Alive."}}}},
            "/readyz": {
                "get": {
                    "responses": {
                        "200": {"description": "Ready."},
                        "503": {"description": "Not ready; the body says why."},
                    }
                }
            },
            "/metrics": {"get": {"responses": {"200": {"description": "Prometheus text."}}}},
        },
    }


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    """This API as an OpenAPI document."""
    body = orjson.dumps(document(request.app[GATEWAY].settings))
    return web.Response(body=body, content_type="application/json")

"""The gateway's OpenAPI document: complete, true to the rules, and checked by schemathesis.

schemathesis runs every check it has against a real gateway, the response
conformance ones included (status code, content type, headers, body schema),
and a document that misstates an answer is shown to fail them.
"""

from __future__ import annotations

import copy
import re
import urllib.request
from collections.abc import Callable
from typing import Any

import jsonschema_rs
import orjson
import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.openapi.checks import (
    JsonSchemaError,
    MissingHeaders,
    UndefinedContentType,
    UndefinedStatusCode,
)

from relay.protocol.event import ProgressEvent
from relay.protocol.idempotency import check_key
from relay.server import socketio
from relay.server.app import create_app
from relay.server.openapi import document
from relay.server.settings import Settings
from tests.helpers import Gateway, event

# Its default answers to invalid data, plus 413 (a batch over maxItems), which
# is a refusal as much as 422 is.
REJECTIONS = [
    *("400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"),
    "5xx",
]
# Every check is enabled by default; the answer conformance ones are named so
# that no configuration change can turn them off unnoticed.
CONFORMANCE = (
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {
            "negative_data_rejection": {"expected-statuses": REJECTIONS},
            **{name: {"enabled": True} for name in CONFORMANCE},
        }
    }
)
PUBLISH = "/api/workflows/progress"


def served_document(gateway: Gateway) -> dict[str, Any]:
    with urllib.request.urlopen(f"{gateway.url}/openapi.json", timeout=10) as response:
        found: dict[str, Any] = orjson.loads(response.read())
    return found


@pytest.fixture(scope="module")
def api_schema(module_gateway: Gateway) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{module_gateway.url}/openapi.json", config=CONFIG)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.parametrize(
    "settings", [Settings(), Settings(metrics_port=0)], ids=["metrics", "metrics_apart"]
)
async def test_every_route_is_documented_and_nothing_else(settings: Settings) -> None:
    app = create_app(settings)
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.method not in ("HEAD", "OPTIONS")
        and not isinstance(route.resource, web.StaticResource)
        # Engine.IO's own protocol, with required query parameters; see the README.
        and route.resource.canonical != socketio.PATH
    }
    paths = document(settings)["paths"]
    assert ("/metrics" in paths) is not settings.metrics_apart
    assert served == {(method, path) for path, item in paths.items() for method in item}


def test_document_states_the_rules(module_gateway: Gateway) -> None:
    served = served_document(module_gateway)
    assert served["openapi"].startswith("3.1")
    event_schema = served["components"]["schemas"]["ProgressEvent"]
    assert event_schema["properties"]["progress"]["maximum"] == 100
    history = served["paths"]["/api/workflows/sessions/{session_id}/events"]["get"]
    [since] = [param for param in history["parameters"] if param["name"] == "since"]
    assert re.fullmatch(since["schema"]["pattern"], "18446744073709551615-0")
    assert not re.fullmatch(since["schema"]["pattern"], "18446744073709551616-0")
    names = [param["name"] for param in history["parameters"]]
    assert names == ["session_id", "limit", "since"]


def test_limits_come_from_the_settings() -> None:
    paths = document(Settings(max_batch=7, max_body_bytes=4096, body_timeout=2.5))["paths"]
    batch = paths["/api/workflows/progress/batch"]["post"]
    assert batch["requestBody"]["content"]["application/json"]["schema"]["maxItems"] == 7
    assert "4096 bytes" in batch["requestBody"]["description"]
    assert "more than 7 events" in batch["responses"]["413"]["description"]
    assert "2.5 seconds" in paths[PUBLISH]["post"]["responses"]["408"]["description"]


def _step_is_valid(step: str) -> bool:
    try:
        ProgressEvent(session_id="s1", workflow_type="map", step=step, progress=0)
    except ValidationError:
        return False
    return True


def _key_is_valid(key: str) -> bool:
    try:
        check_key(key)
    except ValueError:
        return False
    return True


def _step_schema(served: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = served["components"]["schemas"]["ProgressEvent"]["properties"]["step"]
    return schema


def _key_schema(served: dict[str, Any]) -> dict[str, Any]:
    [key] = served["paths"][PUBLISH]["post"]["parameters"]
    schema: dict[str, Any] = key["schema"]
    return schema


# Any text, and text of ordinary characters around one of those the rules are
# about (controls, separators, format, private and unassigned characters).
CHARACTERS = st.characters(codec="utf-8")
ODD_CHARACTERS = st.characters(categories=["Cc", "Cf", "Zs", "Zl", "Zp", "Co", "Cn"])
TEXTS = st.text(CHARACTERS, max_size=300) | st.builds(
    lambda before, odd, after: before + odd + after,
    st.text(CHARACTERS, max_size=130),
    ODD_CHARACTERS | st.sampled_from(" ~\x7f"),
    st.text(CHARACTERS, max_size=130),
)


@pytest.mark.parametrize(
    ("schema_of", "rule"),
    [(_step_schema, _step_is_valid), (_key_schema, _key_is_valid)],
    ids=["step", "idempotency-key"],
)
def test_stated_patterns_agree_with_the_validators(
    schema_of: Callable[[dict[str, Any]], dict[str, Any]], rule: Callable[[str], bool]
) -> None:
    validator = jsonschema_rs.validator_for(schema_of(document(Settings())))

    @given(TEXTS)
    @settings(max_examples=500)
    def agree(text: str) -> None:
        assert validator.is_valid(text) == rule(text), repr(text)

    agree()


@pytest.mark.slow
@schema.exclude(path_regex="^/(ws|api/workflows/events)$").parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_answers_match_the_document(case: schemathesis.Case, module_gateway: Gateway) -> None:
    case.call_and_validate(base_url=module_gateway.url)


def _published(served: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = served["paths"][PUBLISH]["post"]["responses"]["202"]
    return answer


def _undocument_202(served: dict[str, Any]) -> None:
    del served["paths"][PUBLISH]["post"]["responses"]["202"]


def _retype_the_id(served: dict[str, Any]) -> None:
    served["components"]["schemas"]["PublishAnswer"]["properties"]["id"] = {"type": "integer"}


def _rename_the_media_type(served: dict[str, Any]) -> None:
    content = _published(served)["content"]
    content["text/plain"] = content.pop("application/json")


def _require_a_header(served: dict[str, Any]) -> None:
    _published(served)["headers"]["X-Never-Sent"] = {"required": True, "schema": {}}


@pytest.mark.parametrize(
    ("misstate", "failure"),
    [
        (_undocument_202, UndefinedStatusCode),
        (_retype_the_id, JsonSchemaError),
        (_rename_the_media_type, UndefinedContentType),
        (_require_a_header, MissingHeaders),
    ],
)
def test_a_misstated_answer_fails_the_checks(
    module_gateway: Gateway,
    misstate: Callable[[dict[str, Any]], None],
    failure: type[Failure],
) -> None:
    served = copy.deepcopy(served_document(module_gateway))
    misstate(served)
    operation = schemathesis.openapi.from_dict(served, config=CONFIG)[PUBLISH]["POST"]
    case = operation.Case(
        body=event(f"misstated-{failure.__name__}"), media_type="application/json"
    )
    with pytest.raises((Failure, FailureGroup)) as raised:
        case.call_and_validate(base_url=module_gateway.url)
    found = raised.value.exceptions if isinstance(raised.value, FailureGroup) else [raised.value]
    assert failure in {type(item) for item in found}

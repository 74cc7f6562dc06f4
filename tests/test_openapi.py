"""The gateway's own OpenAPI document, and schemathesis run against it: no server errors."""

from __future__ import annotations

import urllib.request

import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests.helpers import Gateway


@pytest.fixture(scope="module")
def api_schema(module_gateway: Gateway) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{module_gateway.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


def test_document_describes_every_endpoint(module_gateway: Gateway) -> None:
    with urllib.request.urlopen(f"{module_gateway.url}/openapi.json", timeout=10) as response:
        document = orjson.loads(response.read())
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) >= {
        "/api/workflows/progress",
        "/api/workflows/progress/batch",
        "/api/workflows/sessions",
        "/api/workflows/sessions/{session_id}",
        "/api/workflows/sessions/{session_id}/events",
        "/api/workflows/sessions/{session_id}/cancel",
        "/api/workflows/events",
        "/ws",
        "/healthz",
        "/readyz",
        "/metrics",
    }
    event = document["components"]["schemas"]["ProgressEvent"]
    assert event["properties"]["progress"]["maximum"] == 100


@schema.exclude(path_regex="^/(ws|api/workflows/events)$").parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_server_errors(case: schemathesis.Case, module_gateway: Gateway) -> None:
    case.call_and_validate(base_url=module_gateway.url, checks=[not_a_server_error])

"""The gateway's own OpenAPI document, and schemathesis run against it with every check."""

from __future__ import annotations

import re
import urllib.request

import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.helpers import Gateway

# Every check schemathesis has runs. Its default answers to invalid data, plus
# 413 (a batch over maxItems), which is a refusal as much as 422 is.
REJECTIONS = [
    *("400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"),
    "5xx",
]
CONFIG = schemathesis.Config.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": REJECTIONS}}}
)


@pytest.fixture(scope="module")
def api_schema(module_gateway: Gateway) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{module_gateway.url}/openapi.json", config=CONFIG)


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
    step = re.compile(event["properties"]["step"]["pattern"])
    assert step.fullmatch("texturing \u00e9t\u00e9")
    assert not step.fullmatch("tab\there")
    history = document["paths"]["/api/workflows/sessions/{session_id}/events"]["get"]
    [since] = [param for param in history["parameters"] if param["name"] == "since"]
    assert re.fullmatch(since["schema"]["pattern"], "18446744073709551615-0")
    assert not re.fullmatch(since["schema"]["pattern"], "18446744073709551616-0")


@schema.exclude(path_regex="^/(ws|api/workflows/events)$").parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_answers_match_the_document(case: schemathesis.Case, module_gateway: Gateway) -> None:
    case.call_and_validate(base_url=module_gateway.url)

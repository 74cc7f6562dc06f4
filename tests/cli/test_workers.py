"""The workers setting and what each worker's log lines say, without starting processes."""

from __future__ import annotations

import io
import json
import logging
import os

import pytest
from pydantic import ValidationError

from relay.cli.logs import configure_logging
from relay.cli.workers import Worker
from relay.server.settings import Settings

REDIS = "redis://127.0.0.1:1/0"


def test_zero_workers_is_one_per_core() -> None:
    assert Settings(redis_url=REDIS, workers=0).worker_count == (os.cpu_count() or 1)
    assert Settings().worker_count == 1


@pytest.mark.parametrize("workers", [0, 2])
def test_workers_need_redis(workers: int) -> None:
    with pytest.raises(ValidationError, match="embedded in-process store cannot be shared"):
        Settings(workers=workers)


def test_a_bad_redis_url_is_the_only_complaint() -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(redis_url="http://nope", workers=2)
    assert [error["loc"] for error in raised.value.errors()] == [("redis_url",)]


def test_each_worker_gets_a_metrics_port_of_its_own() -> None:
    settings = Settings(redis_url=REDIS, workers=3, port=9000, metrics_port=9100)
    ports = [Worker(n, 3, parent_gone=-1).metrics_port(settings) for n in (1, 2, 3)]
    assert ports == [9100, 9101, 9102]
    free = Settings(redis_url=REDIS, workers=3, metrics_port=0)
    assert Worker(2, 3, parent_gone=-1).metrics_port(free) == 0
    assert Worker(2, 3, parent_gone=-1).metrics_port(Settings(redis_url=REDIS)) is None


@pytest.mark.parametrize(
    ("port", "metrics_port", "problem"),
    [(9001, 9000, "outside the workers' metrics ports"), (8080, 65535, "at most 65535")],
)
def test_worker_metrics_ports_must_fit(port: int, metrics_port: int, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        Settings(redis_url=REDIS, workers=2, port=port, metrics_port=metrics_port)


@pytest.mark.usefixtures("root_logger")
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_every_line_of_a_worker_names_it(log_format: str) -> None:
    stream = io.StringIO()
    configure_logging("info", log_format, stream, worker=2)
    logging.getLogger("some.library").info("hello")
    (line,) = stream.getvalue().splitlines()
    if log_format == "json":
        assert json.loads(line)["worker"] == 2
    else:
        assert " worker 2 some.library: hello" in line

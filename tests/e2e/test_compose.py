"""The docker compose deployment agrees with the CLI and settings it runs."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from relay.cli.main import build_parser, settings_from_args
from relay.server.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose.yaml"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"]
    assert set(found) >= {"redis", "gateway", "nginx"}
    return found


def _command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def _serve_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    serve = commands.choices["serve"]
    assert isinstance(serve, argparse.ArgumentParser)
    return serve


def test_docker_compose_config_validates() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is not installed (apt-get install docker-compose)")
        pytest.skip("docker-compose is not installed")
    secrets = {"RELAY_API_KEYS": "a-publisher-key", "RELAY_TOKEN_SECRET": "a-long-secret"}

    def config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [binary, "-f", str(COMPOSE_FILE), "config", "--quiet"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
        )

    plain = {k: v for k, v in os.environ.items() if k not in secrets}
    result = config({**plain, **secrets})
    assert result.returncode == 0, result.stderr
    unlocked = config(plain)  # the deployment refuses to start open
    assert unlocked.returncode != 0
    assert "RELAY_API_KEYS" in unlocked.stderr or "RELAY_TOKEN_SECRET" in unlocked.stderr


def test_gateway_command_uses_real_serve_flags(services: dict[str, Any]) -> None:
    argv = _command(services["gateway"])
    assert argv[:2] == ["relay", "serve"]
    known = {opt for action in _serve_parser()._actions for opt in action.option_strings}
    flags = [arg.split("=", 1)[0] for arg in argv[2:] if arg.startswith("--")]
    assert flags, "the gateway command passes no flags"
    unknown = sorted(set(flags) - known)
    assert not unknown, f"flags missing from `relay serve`: {unknown}"
    build_parser().parse_args(argv[1:])  # the values parse too


def test_gateway_environment_names_settings_fields(services: dict[str, Any]) -> None:
    env = _environment(services["gateway"])
    fields = {f"RELAY_{name.upper()}" for name in Settings.model_fields}
    relay_vars = {name for name in env if name.startswith("RELAY_")}
    assert relay_vars >= {
        "RELAY_REDIS_URL",
        "RELAY_HOST",
        "RELAY_PORT",
        "RELAY_LOG_LEVEL",
        "RELAY_API_KEYS",
        "RELAY_TOKEN_SECRET",
    }
    unknown = sorted(relay_vars - fields)
    assert not unknown, f"not fields of relay.settings.Settings: {unknown}"


def test_gateway_configuration_is_valid(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = services["gateway"]
    for name in list(os.environ):
        if name.startswith("RELAY_"):
            monkeypatch.delenv(name)
    for name, value in _environment(gateway).items():
        monkeypatch.setenv(name, value)
    settings = settings_from_args(build_parser().parse_args(_command(gateway)[1:]))
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.host == "0.0.0.0"
    assert settings.port == 8080


def test_gateway_scales_behind_nginx(services: dict[str, Any]) -> None:
    gateway = services["gateway"]
    assert gateway["deploy"]["replicas"] == 3
    assert "ports" not in gateway, "a published port breaks --scale gateway=N"
    assert "container_name" not in gateway
    assert gateway["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "/readyz" in " ".join(gateway["healthcheck"]["test"])
    assert "8080:80" in [str(p) for p in services["nginx"]["ports"]]


def test_redis_persists_with_append_only_file(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    redis = services["redis"]
    command = " ".join(_command(redis))
    assert re.search(r"--appendonly\s+yes", command)
    volume = redis["volumes"][0].split(":")[0]
    assert volume in compose["volumes"]


def test_every_service_has_a_healthcheck(services: dict[str, Any]) -> None:
    missing = sorted(name for name, svc in services.items() if not svc.get("healthcheck"))
    assert not missing, f"services without a healthcheck: {missing}"
    for svc in services.values():
        assert svc["healthcheck"]["test"]


def test_nginx_proxies_websocket_upgrades(services: dict[str, Any]) -> None:
    volumes = services["nginx"]["volumes"]
    assert any(v.startswith("./deploy/nginx.conf:") for v in volumes)
    conf = NGINX_CONF.read_text(encoding="utf-8")
    assert "proxy_http_version 1.1;" in conf
    assert re.search(r"proxy_set_header\s+Upgrade\s+\$http_upgrade;", conf)
    assert re.search(r"proxy_set_header\s+Connection\s+\$connection_upgrade;", conf)
    assert re.search(r"map\s+\$http_upgrade\s+\$connection_upgrade", conf)
    assert "resolver 127.0.0.11" in conf
    events = re.search(r"location\s+/api/workflows/events\s*\{([^}]*)\}", conf)
    assert events, "no location for the SSE stream"
    assert "proxy_buffering off;" in events.group(1)

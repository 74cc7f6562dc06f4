"""The docker compose deployment agrees with the CLI and settings it runs."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from relay.cli.main import build_parser, settings_from_args
from relay.server import socketio
from relay.server.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose.yaml"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"


SECRETS = {"RELAY_API_KEYS": "a-publisher-key", "RELAY_TOKEN_SECRET": "a-long-secret"}


def _interpolate(text: str, env: dict[str, str]) -> str:
    """compose's ``${NAME}``, ``${NAME:-default}`` and ``${NAME:?error}``, for reading the file."""

    def value(match: re.Match[str]) -> str:
        name, form, fallback = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        assert form != ":?", f"{name} is required: {fallback}"
        return fallback or ""

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", value, text)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    data = yaml.safe_load(_interpolate(COMPOSE_FILE.read_text(encoding="utf-8"), SECRETS))
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


def test_docker_compose_config_validates(tmp_path: Path) -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is not installed (apt-get install docker-compose)")
        pytest.skip("docker-compose is not installed")
    shutil.copy(COMPOSE_FILE, tmp_path / COMPOSE_FILE.name)

    def config(dotenv: dict[str, str]) -> subprocess.CompletedProcess[str]:
        lines = "".join(f"{key}={value}\n" for key, value in dotenv.items())
        (tmp_path / ".env").write_text(lines, encoding="utf-8")
        return subprocess.run(
            [binary, "config", "--quiet"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={k: v for k, v in os.environ.items() if k not in SECRETS},
        )

    result = config(SECRETS)
    assert result.returncode == 0, result.stderr
    unlocked = config({"RELAY_LOG_LEVEL": "info"})  # the deployment refuses to start open
    assert unlocked.returncode != 0
    assert "relay init" in unlocked.stderr


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
    # Everything else comes from .env, which reaches the gateways whole.
    assert services["gateway"]["env_file"] == ".env"
    env = _environment(services["gateway"])
    fields = {f"RELAY_{name.upper()}" for name in Settings.model_fields}
    relay_vars = {name for name in env if name.startswith("RELAY_")}
    assert relay_vars >= {
        "RELAY_REDIS_URL",
        "RELAY_HOST",
        "RELAY_PORT",
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
    raw = COMPOSE_FILE.read_text(encoding="utf-8")
    assert '"${RELAY_PUBLIC_PORT:-8080}:80"' in raw, "the host port is a variable"


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


def _directive(conf: str, name: str) -> str:
    found = re.findall(rf"^\s*{name}\s+([^;]+);", conf, re.MULTILINE)
    assert len(found) == 1, f"{name} is set {len(found)} times"
    return str(found[0])


def _seconds(value: str) -> float:
    number = re.fullmatch(r"(\d+)(ms|s)?", value)
    assert number, value
    return int(number.group(1)) / (1000 if number.group(2) == "ms" else 1)


def test_nginx_forwards_headers_every_location_inherits() -> None:
    conf = NGINX_CONF.read_text(encoding="utf-8")
    server = conf[conf.index("server {") :]
    # A proxy_set_header inside a location would drop all of the server's.
    for block in re.findall(r"location[^{]*\{([^}]*)\}", server):
        assert "proxy_set_header" not in block
    for header in ("Host", "X-Real-IP", "X-Forwarded-For", "X-Forwarded-Proto", "Upgrade"):
        assert re.search(rf"proxy_set_header\s+{header}\s", server), header


def test_nginx_holds_what_three_gateways_hold() -> None:
    conf = NGINX_CONF.read_text(encoding="utf-8")
    per_worker = int(_directive(conf, "worker_connections"))
    assert "worker_rlimit_nofile" not in conf, "the container's nofile limit is the one source"
    # Two connections per proxied client, one worker per core of a two-core host.
    assert per_worker * 2 // 2 >= 3 * Settings().max_connections


def test_nginx_refuses_bodies_as_the_gateway_does() -> None:
    conf = NGINX_CONF.read_text(encoding="utf-8")
    size = _directive(conf, "client_max_body_size")
    assert size.endswith("m")
    assert int(size[:-1]) * 1024 * 1024 == Settings().max_body_bytes
    assert re.search(r"error_page\s+413\s+=\s+@too_large", conf)


def test_nginx_fails_over_quickly() -> None:
    conf = NGINX_CONF.read_text(encoding="utf-8")
    assert _seconds(_directive(conf, "proxy_connect_timeout")) <= 2
    assert int(_directive(conf, "proxy_next_upstream_tries")) >= 2
    resolver = _directive(conf, "resolver")
    valid = re.search(r"valid=(\w+)", resolver)
    assert valid
    assert _seconds(valid.group(1)) <= 5


def test_nginx_stops_before_compose_kills_it(services: dict[str, Any]) -> None:
    conf = NGINX_CONF.read_text(encoding="utf-8")
    nginx = services["nginx"]
    assert nginx["stop_signal"] == "SIGQUIT"
    grace = _seconds(nginx["stop_grace_period"])
    assert _seconds(_directive(conf, "worker_shutdown_timeout")) < grace


def test_nginx_logs_no_token() -> None:
    conf = NGINX_CONF.read_text(encoding="utf-8")
    assert re.search(r"access_log\s+\S+\s+relay;", conf)
    log_format = conf[conf.index("log_format relay") :]
    log_format = log_format[: log_format.index(";")]
    assert "$request_scrubbed" in log_format
    assert "$request " not in log_format
    assert "$request_uri" not in log_format
    assert "$args" not in log_format
    assert _directive(conf, "error_log").split()[-1] == "crit"


def test_metrics_are_not_public(services: dict[str, Any]) -> None:
    env = _environment(services["gateway"])
    assert int(env["RELAY_METRICS_PORT"]) != int(env["RELAY_PORT"])
    conf = NGINX_CONF.read_text(encoding="utf-8")
    assert re.search(r"location\s+=\s+/metrics\s*\{[^}]*return 404", conf)


def _sid_map(conf: str) -> tuple[re.Pattern[str], str, str]:
    """The Socket.IO sid map: its one pattern, the target it gives, and its default."""
    # Up to the brace alone on its line: the pattern holds braces of its own.
    found = re.search(r"map\s+\$arg_sid\s+\$socketio_gateway\s*\{(.*?)^\s*\}", conf, re.M | re.S)
    assert found, "no map from the sid to the gateway that owns it"
    (rule,) = re.findall(r'^\s*"~([^"]+)"\s+(\S+);', found.group(1), re.MULTILINE)
    default = re.search(r"^\s*default\s+(\S+);", found.group(1), re.MULTILINE)
    assert default
    return re.compile(rule[0]), rule[1], default.group(1)


def test_nginx_sends_a_polling_request_to_the_gateway_that_made_its_sid(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = NGINX_CONF.read_text(encoding="utf-8")
    location = re.search(r"location\s+/socket\.io/\s*\{([^}]*)\}", conf)
    assert location
    assert "proxy_pass http://$socketio_gateway;" in location.group(1)
    pattern, target, default = _sid_map(conf)
    # The owner on the gateway port, and nothing a client picks.
    assert target == f"$1:{_environment(services['gateway'])['RELAY_PORT']}"
    assert default == "$gateway"
    monkeypatch.setattr(socket, "gethostname", lambda: "0123456789ab")
    owned = pattern.match(socketio.new_sid())
    assert owned
    assert owned.group(1) == "0123456789ab"
    # Outside a container the sid names no host, and any replica is asked.
    monkeypatch.setattr(socket, "gethostname", lambda: "build-host")
    assert "build-host" not in socketio.new_sid()
    for sid in (
        "",
        socketio.new_sid(),
        "0123456789AB.x",
        "0123456789a.x",
        "0123456789abc.x",
        "0123456789ab",
        "0123456789abx",
        "x0123456789ab.x",
        "redis.x",
        "evil.example:80/x.",
        "0123456789ab:22.x",
    ):
        assert not pattern.match(sid), sid

"""Settings, ``relay serve`` flags and the README's configuration table say the same thing."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from relay.cli.main import build_parser, settings_from_args
from relay.cli.settings_table import TABLE_HEADER, documented_settings, table_lines
from relay.server.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_table(text: str) -> list[str]:
    """The configuration table of a README: from its header line to the first non-row line."""
    lines = text.splitlines()
    start = lines.index(TABLE_HEADER[0])
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return lines[start:end]


def serve_parser() -> argparse.ArgumentParser:
    (commands,) = (a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    serve = commands.choices["serve"]
    assert isinstance(serve, argparse.ArgumentParser)
    return serve


def test_readme_table_matches_settings() -> None:
    # On failure: paste the output of `python3 -m relay.cli.settings_table` over the table.
    assert readme_table(README.read_text(encoding="utf-8")) == table_lines()


def test_the_table_check_sees_a_stale_default() -> None:
    stale = README.read_text(encoding="utf-8").replace("| `8080` |", "| `8081` |", 1)
    assert readme_table(stale) != table_lines()


def test_one_row_per_setting_with_its_variable_flag_and_default() -> None:
    rows = table_lines()[len(TABLE_HEADER) :]
    assert len(rows) == len(Settings.model_fields)
    assert rows[0].startswith("| `RELAY_REDIS_URL` | `--redis-url` | unset | Redis to use (")
    assert "redis+sentinel://" in rows[0]
    assert rows[0].endswith("; when unset the gateway runs on an in-process store. |")
    by_env = {row.split(" | ")[0]: row for row in rows}
    assert "| `--port` | `8080` |" in by_env["| `RELAY_PORT`"]
    assert "| `--demo` | `false` |" in by_env["| `RELAY_DEMO`"]
    assert "| `--stream-prefix` | empty |" in by_env["| `RELAY_STREAM_PREFIX`"]
    assert "| `--discovery-interval` | `0.5` |" in by_env["| `RELAY_DISCOVERY_INTERVAL`"]
    assert "| `--header-timeout` | `10` |" in by_env["| `RELAY_HEADER_TIMEOUT`"]
    assert "| `--min-replicas` | `0` |" in by_env["| `RELAY_MIN_REPLICAS`"]


def test_every_setting_is_a_serve_flag_with_its_help() -> None:
    actions = {action.dest: action for action in serve_parser()._actions}
    for doc in documented_settings():
        action = actions[doc.name]
        assert doc.flag in action.option_strings
        assert action.default is None  # only flags given on the command line override
        assert action.help is not None
        assert doc.description in action.help
        assert doc.env in action.help
        assert f"default: {doc.shown_default}" in action.help


def test_existing_flag_names_keep_working() -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "9001",
            "--redis-url",
            "redis://example:6390/0",
            "--log-level",
            "debug",
            "--log-format",
            "json",
            "--stream-prefix",
            "t:",
            "--stream-maxlen",
            "50",
            "--demo",
        ]
    )
    settings = settings_from_args(args)
    assert (settings.host, settings.port, settings.redis_url) == (
        "0.0.0.0",
        9001,
        "redis://example:6390/0",
    )
    assert (settings.log_level, settings.log_format) == ("debug", "json")
    assert (settings.stream_prefix, settings.stream_maxlen, settings.demo) == ("t:", 50, True)


def test_flags_win_over_the_environment_and_only_given_flags_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RELAY_PORT", "9100")
    monkeypatch.setenv("RELAY_SEND_TIMEOUT", "12.5")
    monkeypatch.setenv("RELAY_DEMO", "true")
    monkeypatch.setenv("RELAY_API_KEYS", "from-env")
    args = build_parser().parse_args(
        ["serve", "--send-timeout", "3", "--no-demo", "--token-secret", "s3cret"]
    )
    settings = settings_from_args(args)
    assert settings.port == 9100  # not given: the environment's
    assert settings.send_timeout == 3.0
    assert settings.demo is False
    assert settings.publisher_keys == ("from-env",)
    assert settings.secret == "s3cret"


def test_comma_lists_read_like_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_ALLOWED_ORIGINS", "https://a.example, https://b.example")
    from_env = settings_from_args(build_parser().parse_args(["serve"]))
    monkeypatch.delenv("RELAY_ALLOWED_ORIGINS")
    args = ["serve", "--allowed-origins", "https://a.example, https://b.example"]
    from_flag = settings_from_args(build_parser().parse_args(args))
    assert from_flag.origins == from_env.origins == ("https://a.example", "https://b.example")


def test_flag_values_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--log-level", "loud"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--read-count", "many"])
    assert "invalid choice" in capsys.readouterr().err
    args = build_parser().parse_args(["serve", "--outbox-limit", "10"])
    with pytest.raises(ValueError, match="outbox_limit"):
        settings_from_args(args)

"""``relay init`` writes a private ``.env`` of fresh secrets that the gateway reads as its own."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from relay.cli.main import main
from relay.server.settings import Settings

NEXT = "docker compose up -d --build"


def assignments(path: Path) -> dict[str, str]:
    """The variables a ``.env`` file sets; every other line must be a comment."""
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f"neither a comment nor an assignment: {line!r}"
        found[name] = value
    return found


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_writes_secrets_the_gateway_reads_and_names_only_the_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["init"]) == 0
    env_file = tmp_path / ".env"
    assert mode(env_file) == 0o600
    values = assignments(env_file)
    assert set(values) == {"RELAY_API_KEYS", "RELAY_TOKEN_SECRET"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.publisher_keys == (values["RELAY_API_KEYS"],)
    assert settings.secret == values["RELAY_TOKEN_SECRET"]
    assert len(values["RELAY_TOKEN_SECRET"]) >= 64  # 48 random bytes
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "relay init: wrote RELAY_API_KEYS and RELAY_TOKEN_SECRET to .env (mode 0600)",
        f"next: {NEXT}",
    ]
    assert err == ""
    assert not any(value in out for value in values.values())


def test_each_run_makes_new_secrets(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    for directory in (first, second):
        directory.mkdir()
        assert main(["init", "--dir", str(directory)]) == 0
    one, other = assignments(first / ".env"), assignments(second / ".env")
    assert all(one[name] != other[name] for name in one)


def test_another_directory_is_named_in_the_next_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "with space"
    directory.mkdir()
    assert main(["init", "--dir", str(directory)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"next: cd '{directory}' && {NEXT}"


def test_an_existing_file_is_kept_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("RELAY_API_KEYS=kept\n", encoding="utf-8")
    env_file.chmod(0o644)
    assert main(["init", "--dir", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [f"relay init: {env_file} exists; give --force to replace it"]
    assert env_file.read_text(encoding="utf-8") == "RELAY_API_KEYS=kept\n"

    assert main(["init", "--dir", str(tmp_path), "--force"]) == 0
    assert assignments(env_file)["RELAY_API_KEYS"] != "kept"
    assert mode(env_file) == 0o600


def test_a_directory_that_is_not_there_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing"
    assert main(["init", "--dir", str(missing)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"relay init: cannot write {missing / '.env'}: no such file or directory"
    ]

"""``relay init``: a ``.env`` file of fresh secrets for ``docker compose``.

Compose reads the ``.env`` file beside ``compose.yaml`` and puts its
variables into the file's ``${...}`` references, which is where the gateway's
publisher key and token secret come from. The variable names are those of
:class:`~relay.server.settings.Settings`, so the file cannot drift from what
the gateway reads.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from relay.cli.settings_table import documented_settings

ENV_FILE = ".env"
NEXT_COMMAND = "docker compose up -d --build"
HEADER = (
    "# Secrets of the relay gateway, read by docker compose; keep this file private.",
    "# Publishers present the key as Authorization: Bearer <key>; the token secret",
    "# signs subscriber tokens (relay token).",
)


def fresh_secrets() -> dict[str, str]:
    """One new publisher key and one new token secret, by their settings' variable names."""
    env = {doc.name: doc.env for doc in documented_settings()}
    return {
        env["api_keys"]: secrets.token_urlsafe(),
        env["token_secret"]: secrets.token_urlsafe(48),
    }


def env_text(values: dict[str, str]) -> str:
    """The ``.env`` file holding ``values``: the header, then one assignment a line."""
    return "\n".join([*HEADER, *(f"{name}={value}" for name, value in values.items())]) + "\n"


@dataclass(frozen=True, slots=True)
class Written:
    """What :func:`write_env` wrote: where, and which variables."""

    path: Path
    names: tuple[str, ...]


class EnvFileExists(Exception):
    """The ``.env`` file is there already, and overwriting it was not asked for."""


def write_env(directory: Path, *, force: bool = False) -> Written:
    """Write ``directory/.env`` with fresh secrets, readable by its owner only.

    Raises :class:`EnvFileExists` when the file exists and ``force`` is not
    given, and :class:`OSError` when it cannot be written. The file is created
    with mode 0600, so the secrets are never readable by others, not even
    for a moment; a file overwritten is given that mode too.
    """
    path = directory / ENV_FILE
    values = fresh_secrets()
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        descriptor = os.open(path, flags, 0o600)
    except FileExistsError:
        raise EnvFileExists(str(path)) from None
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        os.fchmod(descriptor, 0o600)
        file.write(env_text(values))
    return Written(path, tuple(values))

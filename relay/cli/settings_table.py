"""The gateway's settings described once, for ``relay serve --help`` and the README.

Every :class:`~relay.server.settings.Settings` field is a ``RELAY_*``
environment variable and a ``relay serve`` flag; :func:`documented_settings`
names both and gives the default and description, which the flags' help and
the README's configuration table are made from. ``python3 -m
relay.cli.settings_table`` prints that table; a test fails when the README's
copy differs from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic.fields import FieldInfo

from relay.server.settings import Settings

TABLE_HEADER = ("| variable | flag | default | meaning |", "|---|---|---|---|")


@dataclass(frozen=True, slots=True)
class SettingDoc:
    """One setting as a person configures it."""

    name: str
    """The field of :class:`~relay.server.settings.Settings`."""
    env: str
    flag: str
    default: str | None
    """The default as it would be written in the variable; None when the setting is unset."""
    description: str
    field: FieldInfo

    @property
    def shown_default(self) -> str:
        """The default for a reader: the value, ``unset`` or ``empty``."""
        if self.default is None:
            return "unset"
        return self.default or "empty"

    def row(self) -> str:
        """The setting's line in the README's configuration table."""
        default = f"`{self.default}`" if self.default else self.shown_default
        description = self.description.replace("|", "\\|")
        return f"| `{self.env}` | `{self.flag}` | {default} | {description} |"


def _default_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def documented_settings() -> list[SettingDoc]:
    """Every setting, in the order :class:`~relay.server.settings.Settings` declares them."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    docs = []
    for name, field in Settings.model_fields.items():
        if not field.description:
            raise ValueError(f"Settings.{name} has no description")
        docs.append(
            SettingDoc(
                name=name,
                env=f"{prefix}{name}".upper(),
                flag="--" + name.replace("_", "-"),
                default=_default_text(field.default),
                description=field.description,
                field=field,
            )
        )
    return docs


def table_lines() -> list[str]:
    """The README's configuration table, line by line."""
    return [*TABLE_HEADER, *(doc.row() for doc in documented_settings())]


if __name__ == "__main__":
    print("\n".join(table_lines()))

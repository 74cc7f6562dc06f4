"""A Prefect flow reporting its tasks through relay, as the game-master app's flows did.

    pip install prefect
    RELAY_REDIS_URL=redis://localhost:6379/0 python examples/prefect_flow.py

Prefect is not a dependency of relay: this file only shows the wiring. Each
task reports its own step; the flow's session marks the run ``completed``,
``failed`` with the exception's message, or ``cancelled`` when someone asked
for it through ``POST /api/workflows/sessions/{id}/cancel``.
"""

from __future__ import annotations

import os

from prefect import flow, task

from relay import Reporter, ReportingSession


@task
def describe_character(session: ReportingSession, prompt: str) -> str:
    session.report("describing", 10, {"prompt": prompt})
    return f"A hero who {prompt}"


@task
def draw_portrait(session: ReportingSession, description: str) -> str:
    session.report("drawing", 50, {"description": description})
    return "portrait.png"


@task
def write_backstory(session: ReportingSession, description: str) -> str:
    session.report("writing backstory", 80)
    return f"{description}, born under a red moon."


@flow
def create_character(prompt: str, session_id: str | None = None) -> dict[str, str]:
    """Create a character, reporting every step under one relay session."""
    redis_url = os.environ.get("RELAY_REDIS_URL", "redis://127.0.0.1:6379/0")
    with (
        Reporter(redis_url) as reporter,
        reporter.session("character", session_id, raise_on_cancel=True) as session,
    ):
        description = describe_character(session, prompt)
        portrait = draw_portrait(session, description)
        backstory = write_backstory(session, description)
    return {"session_id": session.session_id, "portrait": portrait, "backstory": backstory}


if __name__ == "__main__":
    print(create_character("tames storms"))

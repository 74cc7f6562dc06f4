"""A plain worker reporting a map generation through relay.

    python examples/worker.py --redis-url redis://localhost:6379/0 --session demo1

Watch it with ``relay watch --type map`` or the dashboard, and cancel it with
``curl -X POST localhost:8080/api/workflows/sessions/demo1/cancel``.
"""

from __future__ import annotations

import argparse
import time

from relay import Reporter

STEPS = [
    ("analyzing", "reading the prompt"),
    ("layout", "placing rooms and corridors"),
    ("terrain", "growing forests and rivers"),
    ("texturing", "painting tiles"),
    ("lighting", "casting shadows"),
]


def generate_map(reporter: Reporter, session_id: str | None, pause: float) -> str:
    """Run the fake generation; returns the session id it reported under."""
    with reporter.session("map", session_id, raise_on_cancel=True) as session:
        for index, (step, details) in enumerate(STEPS):
            for part in range(4):
                progress = (index * 4 + part) * 100 / (len(STEPS) * 4)
                remaining = (len(STEPS) * 4 - index * 4 - part) * pause
                # A report raises CancelRequested once someone asked to stop;
                # the session then ends as "cancelled".
                session.report(
                    step, progress, {"details": details, "estimated_time_remaining": remaining}
                )
                time.sleep(pause)
    return session.session_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--session", default=None, help="session id (default: a new one)")
    parser.add_argument("--pause", type=float, default=0.5, help="seconds per step part")
    args = parser.parse_args()
    with Reporter(args.redis_url) as reporter:
        session_id = generate_map(reporter, args.session, args.pause)
    print(session_id)


if __name__ == "__main__":
    main()

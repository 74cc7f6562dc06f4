"""How far the time remaining is from the truth, by the rate alone and with a learned duration.

Samples the timing model of the demo's simulated workflows
(:data:`relay.cli.demo.WORKFLOWS`, its plans: steps, ticks per step, a pace
per session, retries, silences past the stall time) for many sessions of each
type, without waiting: every session's reports get times on a virtual clock.
Sessions that complete teach a :class:`relay.server.durations.Durations`
store, as the gateway's view does, in the order they were started. For the
others (the next sessions of each type), the estimate at its first event and
at the first event at or past 10, 25, 50 and 75 % is compared with the true
time left, for:

- ``rate``: the rule without a typical duration (the average progress rate);
- ``typical-elapsed``: the typical duration less the time elapsed;
- ``typical-share``: the typical duration times the share of work left;
- ``rule``: :func:`relay.protocol.progress.estimated_time_remaining` given
  the typical duration, what the gateway answers.

The worker's own figure (``metadata``) is left out: it would win. Prints, per
point and estimate, how often there is an estimate and the median and p90
absolute error in seconds and in % of the session's duration::

    PYTHONPATH=. python3 bench/eta_error.py
    PYTHONPATH=. python3 bench/eta_error.py --sessions 5000 --seed 7
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass

from relay.cli.demo import WORKFLOWS, DemoOptions, Simulation
from relay.protocol.progress import estimated_time_remaining
from relay.server.durations import Durations

POINTS = (("first event", None), ("10 %", 10.0), ("25 %", 25.0), ("50 %", 50.0), ("75 %", 75.0))
START = 1_700_000_000_000


@dataclass(frozen=True, slots=True)
class Timeline:
    """One simulated session that completed: its reports (ms, progress) and its duration."""

    reports: list[tuple[int, float]]
    duration_ms: int


class _NoPublisher:
    """The simulation is only asked for plans here, never to publish."""

    def session(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError

    async def request_cancel(self, session: object) -> str:
        raise NotImplementedError


def timelines(workflow_type: str, count: int, seed: int) -> list[Timeline]:
    """``count`` completed sessions of ``workflow_type``, by the demo's plans and pauses."""
    options = DemoOptions(seed=seed, safe_start=0)
    simulation = Simulation(_NoPublisher(), options)  # type: ignore[arg-type]
    rng = random.Random(seed)
    found: list[Timeline] = []
    number = 0
    while len(found) < count:
        plan = simulation._plan(workflow_type, number)
        number += 1
        hangs = plan.silent_at is not None and plan.silence is None
        if plan.fail_at is not None or plan.cancel_at is not None or hangs:
            continue  # never completes: teaches nothing, has no true time left
        at = 0.0
        reports = []
        for index, (_, progress, _) in enumerate(plan.ticks):
            reports.append((round(at), float(progress)))
            at += rng.uniform(*plan.pause) * 1000
            if index == plan.silent_at and plan.silence is not None:
                at += plan.silence * 1000
        found.append(Timeline(reports, round(at)))
    return found


Estimate = Callable[[float, float, int, float | None], float | None]


def _rate(first: float, progress: float, elapsed: int, typical: float | None) -> float | None:
    return _rule(first, progress, elapsed, None)


def _rule(first: float, progress: float, elapsed: int, typical: float | None) -> float | None:
    return estimated_time_remaining(
        status="running",
        progress=progress,
        metadata=None,
        first_progress=first,
        started_at=START,
        updated_at=START + elapsed,
        typical_duration=typical,
    )


def _typical_elapsed(
    first: float, progress: float, elapsed: int, typical: float | None
) -> float | None:
    return None if typical is None else max(typical - elapsed / 1000, 0.0)


def _typical_share(
    first: float, progress: float, elapsed: int, typical: float | None
) -> float | None:
    return None if typical is None else typical * (100 - progress) / 100


ESTIMATES: dict[str, Estimate] = {
    "rate": _rate,
    "typical-elapsed": _typical_elapsed,
    "typical-share": _typical_share,
    "rule": _rule,
}


def measure(sessions: int, seed: int) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """(point, estimate) -> (absolute error s, absolute error % of duration) per session."""
    errors: dict[tuple[str, str], list[tuple[float, float]]] = {}
    unknown: dict[tuple[str, str], int] = {}
    for offset, workflow_type in enumerate(WORKFLOWS):
        store = Durations()
        for timeline in timelines(workflow_type, sessions, seed + offset):
            typical = store.typical(workflow_type)
            if typical is not None:
                first_ms, first = timeline.reports[0]
                for point, at_least in POINTS:
                    found = next(
                        (r for r in timeline.reports if at_least is None or r[1] >= at_least),
                        None,
                    )
                    if found is None:
                        continue
                    elapsed = found[0] - first_ms
                    truth = (timeline.duration_ms - found[0]) / 1000
                    for name, estimate in ESTIMATES.items():
                        got = estimate(first, found[1], elapsed, typical)
                        key = (point, name)
                        if got is None:
                            unknown[key] = unknown.get(key, 0) + 1
                            continue
                        error = abs(got - truth)
                        percent = 100 * error / (timeline.duration_ms / 1000)
                        errors.setdefault(key, []).append((error, percent))
            store.record(workflow_type, timeline.duration_ms - timeline.reports[0][0])
    for key, count in unknown.items():
        errors.setdefault(key, [])
        errors[key].extend([(math.nan, math.nan)] * count)
    return errors


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]


def main() -> None:
    """Measure and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=2000, help="completed sessions per type")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    errors = measure(args.sessions, args.seed)
    print(f"{args.sessions} completed sessions per type of {', '.join(WORKFLOWS)}\n")
    print("| point | estimate | known | median s | p90 s | median % | p90 % |")
    print("|---|---|---|---|---|---|---|")
    for point, _ in POINTS:
        for name in ESTIMATES:
            rows = errors.get((point, name), [])
            known = [row for row in rows if not math.isnan(row[0])]
            share = f"{100 * len(known) / len(rows):.0f} %" if rows else "-"
            if not known:
                print(f"| {point} | {name} | {share} | - | - | - | - |")
                continue
            seconds = [row[0] for row in known]
            percent = [row[1] for row in known]
            print(
                f"| {point} | {name} | {share} | {statistics.median(seconds):.2f} "
                f"| {_p90(seconds):.2f} | {statistics.median(percent):.1f} | {_p90(percent):.1f} |"
            )


if __name__ == "__main__":
    main()

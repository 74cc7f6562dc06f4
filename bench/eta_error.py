"""How far the time remaining is from the truth: by the rate alone, learned per type, per step.

Samples the timing model of the demo's simulated workflows
(:data:`relay.cli.demo.WORKFLOWS`, its plans: weighted steps, ticks per step,
a pace per session, retries, silences past the stall time) for many sessions
of each type, without waiting: every session's reports get times on a
virtual clock. Each report names its step and the step's own progress, as
the demo's workers do; the plan they declare gives the overall progress
(:func:`relay.protocol.plans.position`). Sessions that complete teach a
:class:`relay.server.durations.Durations` store, as the gateway's view does
(the whole session per type, each step from its first report to the next
step's, see :class:`relay.server.step_times.StepTimes`), in the order they
were started. For the others (the next sessions of each type), the estimate
at its first event and at the first event at or past 10, 25, 50 and 75 %
overall is compared with the true time left, for:

- ``rate``: the rule without learned figures (the average progress rate);
- ``typical-elapsed``: the typical duration less the time elapsed;
- ``typical-share``: the typical duration times the share of work left;
- ``per-type``: :func:`relay.protocol.progress.estimated_time_remaining`
  given the type's typical duration only;
- ``per-step``: the same rule given the typical durations of the plan's
  steps too, what the gateway answers.

The worker's own figure (``metadata``) is left out: it would win. Prints the
rate, per-type and per-step median and p90 absolute errors side by side per
point, then, per point and estimate, how often there is an estimate and the
median and p90 absolute error in seconds and in % of the session's duration::

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
from relay.protocol.plans import PlanStep, position
from relay.protocol.progress import estimated_time_remaining
from relay.server.durations import Durations
from relay.server.step_times import StepTimes

POINTS = (("first event", None), ("10 %", 10.0), ("25 %", 25.0), ("50 %", 50.0), ("75 %", 75.0))
START = 1_700_000_000_000
SIDE_BY_SIDE = ("rate", "per-type", "per-step")


@dataclass(frozen=True, slots=True)
class Report:
    """One report of a simulated session: when (ms from its start), its step and progress."""

    at: int
    step: str
    step_index: int
    step_progress: float
    overall: float


@dataclass(frozen=True, slots=True)
class Timeline:
    """One simulated session that completed: its reports and its duration."""

    reports: list[Report]
    duration_ms: int

    def step_durations(self) -> list[tuple[str, int]]:
        """Each step's ms, as the gateway's view learns them."""
        times = StepTimes()
        for report in self.reports:
            times.take(report.step, report.at)
        return times.durations(self.duration_ms)


@dataclass(frozen=True, slots=True)
class Point:
    """What an estimate works from: the session's first report, its latest, and what was learned."""

    first: Report
    latest: Report
    typical: float | None
    typical_steps: list[float | None]

    def rule(self, *, typical: float | None, steps: list[float | None] | None) -> float | None:
        """The gateway's rule at this point, given these learned figures."""
        return estimated_time_remaining(
            status="running",
            progress=self.latest.overall,
            metadata=None,
            first_progress=self.first.overall,
            started_at=START + self.first.at,
            updated_at=START + self.latest.at,
            typical_duration=typical,
            typical_step_durations=steps,
            step_index=self.latest.step_index,
            step_progress=self.latest.step_progress,
        )


class _NoPublisher:
    """The simulation is only asked for plans here, never to publish."""

    def session(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError

    async def request_cancel(self, session: object) -> str:
        raise NotImplementedError


def plan_of(workflow_type: str) -> list[PlanStep]:
    """The plan the demo's sessions of ``workflow_type`` declare."""
    return [PlanStep(step=step.name, weight=step.weight) for step in WORKFLOWS[workflow_type]]


def timelines(workflow_type: str, count: int, seed: int) -> list[Timeline]:
    """``count`` completed sessions of ``workflow_type``, by the demo's plans and pauses."""
    options = DemoOptions(seed=seed, safe_start=0)
    simulation = Simulation(_NoPublisher(), options)  # type: ignore[arg-type]
    rng = random.Random(seed)
    plan = plan_of(workflow_type)
    found: list[Timeline] = []
    number = 0
    while len(found) < count:
        session = simulation._plan(workflow_type, number)
        number += 1
        hangs = session.silent_at is not None and session.silence is None
        if session.fail_at is not None or session.cancel_at is not None or hangs:
            continue  # never completes: teaches nothing, has no true time left
        if not session.ticks:
            continue  # a map that fans out to tiles: its bar is its children's, not its steps'
        at = 0.0
        reports = []
        for index, (step, progress, _) in enumerate(session.ticks):
            where = position(plan, step, progress, "running")
            assert where.step_index is not None
            assert where.overall is not None
            reports.append(Report(round(at), step, where.step_index, progress, where.overall))
            at += rng.uniform(*session.pause) * 1000
            if index == session.silent_at and session.silence is not None:
                at += session.silence * 1000
        found.append(Timeline(reports, round(at)))
    return found


Estimate = Callable[[Point], float | None]


def _typical_elapsed(point: Point) -> float | None:
    if point.typical is None:
        return None
    return max(point.typical - (point.latest.at - point.first.at) / 1000, 0.0)


def _typical_share(point: Point) -> float | None:
    return None if point.typical is None else point.typical * (100 - point.latest.overall) / 100


ESTIMATES: dict[str, Estimate] = {
    "rate": lambda point: point.rule(typical=None, steps=None),
    "typical-elapsed": _typical_elapsed,
    "typical-share": _typical_share,
    "per-type": lambda point: point.rule(typical=point.typical, steps=None),
    "per-step": lambda point: point.rule(typical=point.typical, steps=point.typical_steps),
}


def measure(sessions: int, seed: int) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """(point, estimate) -> (absolute error s, absolute error % of duration) per session."""
    errors: dict[tuple[str, str], list[tuple[float, float]]] = {}
    unknown: dict[tuple[str, str], int] = {}
    for offset, workflow_type in enumerate(WORKFLOWS):
        store = Durations()
        steps = [step.step for step in plan_of(workflow_type)]
        for timeline in timelines(workflow_type, sessions, seed + offset):
            typical = store.typical(workflow_type)
            if typical is not None:
                first = timeline.reports[0]
                for point, at_least in POINTS:
                    found = next(
                        (r for r in timeline.reports if at_least is None or r.overall >= at_least),
                        None,
                    )
                    if found is None:
                        continue
                    truth = (timeline.duration_ms - found.at) / 1000
                    seen = Point(first, found, typical, store.typical_steps(workflow_type, steps))
                    for name, estimate in ESTIMATES.items():
                        got = estimate(seen)
                        key = (point, name)
                        if got is None:
                            unknown[key] = unknown.get(key, 0) + 1
                            continue
                        error = abs(got - truth)
                        percent = 100 * error / (timeline.duration_ms / 1000)
                        errors.setdefault(key, []).append((error, percent))
            store.record(workflow_type, timeline.duration_ms - timeline.reports[0].at)
            for step, duration_ms in timeline.step_durations():
                store.record((workflow_type, step), duration_ms)
    for key, count in unknown.items():
        errors.setdefault(key, [])
        errors[key].extend([(math.nan, math.nan)] * count)
    return errors


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]


def _known(rows: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [row for row in rows if not math.isnan(row[0])]


def side_by_side(errors: dict[tuple[str, str], list[tuple[float, float]]]) -> None:
    """Per point, the median / p90 error in seconds of each of SIDE_BY_SIDE."""
    print("| point | " + " | ".join(f"{name} median / p90 s" for name in SIDE_BY_SIDE) + " |")
    print("|---|" + "---|" * len(SIDE_BY_SIDE))
    for point, _ in POINTS:
        cells = []
        for name in SIDE_BY_SIDE:
            seconds = [row[0] for row in _known(errors.get((point, name), []))]
            cells.append(
                f"{statistics.median(seconds):.2f} / {_p90(seconds):.2f}" if seconds else "-"
            )
        print(f"| {point} | " + " | ".join(cells) + " |")


def main() -> None:
    """Measure and print markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=2000, help="completed sessions per type")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    errors = measure(args.sessions, args.seed)
    print(f"{args.sessions} completed sessions per type of {', '.join(WORKFLOWS)}\n")
    side_by_side(errors)
    print()
    print("| point | estimate | known | median s | p90 s | median % | p90 % |")
    print("|---|---|---|---|---|---|---|")
    for point, _ in POINTS:
        for name in ESTIMATES:
            rows = errors.get((point, name), [])
            known = _known(rows)
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

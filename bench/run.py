"""Benchmark relay against Node Socket.IO, python-socketio and bare aiohttp.

Starts its own redis-server, the systems under test and the load generators;
runs each workload for each system in turn; stops everything it started;
prints markdown tables and writes a JSON record to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import install
import machine
import report
from config import RESULTS_DIR, SYSTEMS, WORKLOADS, Config
from procs import raise_nofile_limit
from workloads import w1_ingest, w2_fanout, w3_memory, w4_publish, w5_slow, w6_idle

Workload = tuple[tuple[str, ...], Callable[[str, Config], Awaitable[dict[str, Any]]]]

WORKLOAD_MODULES: dict[str, Workload] = {
    "W1": (w1_ingest.SYSTEMS, w1_ingest.run),
    "W2": (w2_fanout.SYSTEMS, w2_fanout.run),
    "W3": (w3_memory.SYSTEMS, w3_memory.run),
    "W4": (w4_publish.SYSTEMS, w4_publish.run),
    "W5": (w5_slow.SYSTEMS, w5_slow.run),
    "W6": (w6_idle.SYSTEMS, w6_idle.run),
}


def _choices(text: str, allowed: tuple[str, ...]) -> list[str]:
    chosen = [item.strip() for item in text.split(",") if item.strip()]
    unknown = sorted(set(chosen) - set(allowed))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {', '.join(unknown)}; choose from {allowed}")
    return chosen


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short phases, for a smoke run")
    parser.add_argument(
        "--systems",
        type=lambda text: _choices(text, SYSTEMS),
        default=list(SYSTEMS),
        help=f"comma-separated, from {','.join(SYSTEMS)} (default: all)",
    )
    parser.add_argument(
        "--workloads",
        type=lambda text: _choices(text.upper(), WORKLOADS),
        default=list(WORKLOADS),
        help=f"comma-separated, from {','.join(WORKLOADS)} (default: all)",
    )
    parser.add_argument("--setup", action="store_true", help="only install what the bench needs")
    parser.add_argument("--no-setup", action="store_true", help="skip the install check")
    return parser.parse_args(argv)


async def run_all(cfg: Config, systems: list[str], workloads: list[str]) -> report.Results:
    """Every chosen workload for every chosen system it applies to; errors are recorded."""
    results: report.Results = {}
    for workload in workloads:
        applies_to, run = WORKLOAD_MODULES[workload]
        for system in (s for s in systems if s in applies_to):
            print(f"{workload} {system} ...", file=sys.stderr, flush=True)
            started = time.monotonic()
            try:
                result = await run(system, cfg)
            except Exception as exc:
                traceback.print_exc()
                result = {"error": f"{type(exc).__name__}: {exc}"}
            result["elapsed_s"] = round(time.monotonic() - started, 1)
            results.setdefault(workload, {})[system] = result
    return results


def main(argv: list[str] | None = None) -> int:
    """Set up, run, print the tables, write the JSON record."""
    args = parse_args(argv)
    if not args.no_setup:
        install.ensure(args.systems, args.workloads)
    if args.setup:
        return 0
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    log_dir = RESULTS_DIR / "logs" / stamp
    log_dir.mkdir(parents=True, exist_ok=True)
    nofile = raise_nofile_limit()
    cfg = Config.make(quick=args.quick, log_dir=log_dir)
    started = time.monotonic()
    results = asyncio.run(run_all(cfg, args.systems, args.workloads))
    record = {
        "started_utc": stamp,
        "quick": args.quick,
        "duration_s": round(time.monotonic() - started, 1),
        "machine": {**machine.describe(), "nofile_limit": nofile},
        "config": {k: str(v) if k == "log_dir" else v for k, v in vars(cfg).items()},
        "results": results,
    }
    path = RESULTS_DIR / f"bench-{stamp}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    m = record["machine"]
    header = f"## relay bench {stamp}{' (quick)' if args.quick else ''}\n\n{machine.header_line(m)}"
    text = report.render(results, header, m["cores"] or 1)
    path.with_suffix(".md").write_text(text)
    print(text)
    print(f"record: {path} (and .md)\nlogs: {log_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

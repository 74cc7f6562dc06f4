"""What a worker's ``import relay`` costs: wall time and modules loaded, in fresh interpreters.

Run: ``python bench/worker_import.py [--runs N]``. Each run starts a new
interpreter that imports what a worker uses (``from relay import Reporter,
AsyncReporter, HttpReporter, ProgressEvent``) and reports the time taken and
``len(sys.modules)`` before and after, and whether any gateway module or
gateway dependency was loaded.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

PROBE = """
import json, sys, time
before = len(sys.modules)
start = time.perf_counter()
from relay import AsyncReporter, HttpReporter, ProgressEvent, Reporter
elapsed = time.perf_counter() - start
server = sorted(m for m in sys.modules
                if m.split(".")[:2] in (["relay", "server"], ["relay", "cli"]))
heavy = sorted(m for m in ("aiohttp", "prometheus_client", "jwt", "fakeredis", "rich",
                           "pydantic_settings", "lupa") if m in sys.modules)
print(json.dumps({"seconds": elapsed, "modules": len(sys.modules), "new": len(sys.modules) - before,
                  "server": server, "heavy": heavy}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    samples = []
    for _ in range(args.runs):
        out = subprocess.run(
            [sys.executable, "-c", PROBE], check=True, capture_output=True, text=True
        ).stdout
        samples.append(json.loads(out))
    times = sorted(s["seconds"] for s in samples)
    last = samples[-1]
    print(f"runs: {args.runs}")
    print(
        f"import time: median {statistics.median(times) * 1000:.0f} ms, "
        f"best {times[0] * 1000:.0f} ms"
    )
    print(f"modules in sys.modules after import: {last['modules']} ({last['new']} new)")
    print(f"gateway or tool modules loaded: {last['server'] or 'none'}")
    print(f"gateway dependencies loaded: {last['heavy'] or 'none'}")


if __name__ == "__main__":
    main()

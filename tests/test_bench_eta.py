"""The time remaining's benchmark still runs on the demo's workflows as they are now."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_eta_benchmark_prints_every_estimate_at_every_point() -> None:
    done = subprocess.run(
        [sys.executable, "bench/eta_error.py", "--sessions", "60"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| 50 % |")]
    names = {row.split("|")[2].strip() for row in rows}
    assert {"rate", "per-type", "per-step"} <= names

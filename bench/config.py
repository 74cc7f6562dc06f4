"""What one bench run does: paths, durations, sizes and the targets it checks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
LOADGEN_DIR = BENCH_DIR / "loadgen"
PEERS_DIR = BENCH_DIR / "peers"
NODE_PEER_DIR = PEERS_DIR / "node-socketio"
RESULTS_DIR = BENCH_DIR / "results"

SYSTEMS = ("relay", "relay-sio", "relay-sio-poll", "relay-workers", "node", "pysio", "bare")
WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6")
# Processes per gateway of the relay-workers system (relay serve --workers).
RELAY_WORKERS = 2
WORKFLOW_TYPE = "map"
SESSIONS = 20
P99_LIMIT_MS = 100.0


def save_record(stamp: str, record: dict[str, object]) -> Path:
    """Write one stand-alone bench's figures to ``results/<stamp>.json``; the path.

    The machine and relay's commit go with them, as with every run of ``run.py``.
    """
    import machine  # machine imports this module's paths

    path = RESULTS_DIR / f"{stamp}.json"
    path.write_text(json.dumps({"machine": machine.describe(), **record}, indent=2) + "\n")
    return path


@dataclass(frozen=True)
class Config:
    """Sizes and durations; ``quick`` shortens every timed phase for a smoke run."""

    quick: bool
    log_dir: Path
    w1_seconds: int
    w1_connections: int
    w2_subscribers: int
    w2_seconds: float
    w2_rates: tuple[int, ...]
    w2_fallback_rates: tuple[int, ...]
    w2_big_subscribers: int
    w2_big_rates: tuple[int, ...]
    w2_big_fallback_rates: tuple[int, ...]
    drain_seconds: float
    w3_idle: int
    w3_big: int
    w4_seconds: float
    w4_batch_size: int
    w4_batch_clients: int
    w4_reporter_tasks: int
    w5_seconds: float
    w5_stalled_share: float
    w6_seconds: float

    @classmethod
    def make(cls, *, quick: bool, log_dir: Path) -> Config:
        """The full run's figures, or the quick run's."""
        return cls(
            quick=quick,
            log_dir=log_dir,
            w1_seconds=3 if quick else 10,
            w1_connections=64,
            w2_subscribers=200,
            w2_seconds=3.0 if quick else 10.0,
            w2_rates=(500, 2000) if quick else (500, 1000, 2000, 4000, 8000, 16000),
            w2_fallback_rates=(250,) if quick else (250, 125),
            # The subscriber process tops out near 100,000 deliveries/s: 100 ev/s
            # to 1,000 subscribers is that already, so higher steps find the
            # load generator's limit as much as the server's.
            w2_big_subscribers=1000,
            w2_big_rates=(100,) if quick else (100, 200, 400),
            w2_big_fallback_rates=(50,) if quick else (50, 25),
            drain_seconds=3.0 if quick else 5.0,
            w3_idle=2000,
            w3_big=10_000,
            w4_seconds=3.0 if quick else 10.0,
            w4_batch_size=100,
            w4_batch_clients=8,
            w4_reporter_tasks=256,
            w5_seconds=4.0 if quick else 40.0,
            w5_stalled_share=0.1,
            w6_seconds=5.0 if quick else 35.0,
        )

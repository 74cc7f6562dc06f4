"""Meters over a measured interval: CPU from /proc utime + stime, peak RSS from VmRSS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass

from procs import Proc


@dataclass(frozen=True)
class CpuReading:
    """CPU milliseconds per process over ``wall_ms`` of elapsed time."""

    per_proc: dict[str, float]
    wall_ms: float

    def total(self, names: Iterable[str] | None = None) -> float:
        """CPU ms of the named processes (all when None)."""
        chosen = self.per_proc if names is None else {n: self.per_proc[n] for n in names}
        return sum(chosen.values())

    def per_thousand(self, count: int, names: Iterable[str] | None = None) -> float | None:
        """CPU ms per 1,000 units of work (requests, deliveries); None when nothing was done."""
        return self.total(names) * 1000 / count if count else None

    def as_dict(self) -> dict[str, object]:
        """For the JSON record."""
        rounded = {name: round(ms, 1) for name, ms in self.per_proc.items()}
        return {"cpu_ms": rounded, "wall_ms": round(self.wall_ms, 1)}


class CpuMeter:
    """Started at the beginning of an interval; :meth:`read` at its end."""

    def __init__(self, procs: Iterable[Proc]) -> None:
        self._procs = list(procs)
        self._start = {proc.name: proc.cpu_ms() for proc in self._procs}
        self._wall = time.monotonic()

    def read(self) -> CpuReading:
        """CPU used by each process since the meter was made."""
        used = {proc.name: proc.cpu_ms() - self._start[proc.name] for proc in self._procs}
        return CpuReading(used, (time.monotonic() - self._wall) * 1000)


class RssPeak:
    """The highest combined RSS of some processes, sampled in the background."""

    def __init__(self, procs: Iterable[Proc], interval: float = 0.25) -> None:
        self._procs = list(procs)
        self._interval = interval
        self.start_kib = self._sample()
        self.peak_kib = self.start_kib
        self._task: asyncio.Task[None] | None = None

    def _sample(self) -> int:
        return sum(proc.rss_kib() for proc in self._procs)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self.peak_kib = max(self.peak_kib, self._sample())

    def __enter__(self) -> RssPeak:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
        self.peak_kib = max(self.peak_kib, self._sample())

    @property
    def growth_mib(self) -> float:
        """Peak minus start, in MiB."""
        return (self.peak_kib - self.start_kib) / 1024

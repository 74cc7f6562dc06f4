"""Meters over a measured interval: CPU from /proc utime + stime, peak RSS from VmRSS."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from procs import CLOCK_TICKS, Proc, proc_stat

ProcessTable = dict[int, tuple[int, str, float]]
FOREIGN_REPORTED_MS = 100.0


def machine_cpu_ms() -> tuple[float, float]:
    """Busy and total CPU ms of the whole machine so far, all cores, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:9]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields)
    return (total - idle) * 1000 / CLOCK_TICKS, total * 1000 / CLOCK_TICKS


def process_table() -> ProcessTable:
    """pid -> (parent pid, name, CPU ms) of every process now."""
    table: ProcessTable = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                table[int(entry.name)] = proc_stat(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue  # it exited while we looked
    return table


def foreign_cpu(before: ProcessTable, after: ProcessTable) -> dict[str, float]:
    """CPU ms by name of processes that are neither this one nor its descendants.

    Processes that started and ended between the two tables are not seen.
    """
    ours = {os.getpid()}
    grew = True
    while grew:
        found = {pid for pid, (ppid, _, _) in after.items() if ppid in ours} - ours
        grew = bool(found)
        ours |= found
    used: Counter[str] = Counter()
    for pid, (_, name, ms) in after.items():
        if pid not in ours:
            spent = ms - before[pid][2] if pid in before else ms
            used[_label(pid, name) if spent >= FOREIGN_REPORTED_MS else name] += spent
    return {name: round(ms, 1) for name, ms in used.most_common(3) if ms >= FOREIGN_REPORTED_MS}


def _label(pid: int, name: str) -> str:
    """A process's first command words, to tell what it is."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return name
    return " ".join(w.decode(errors="replace").rsplit("/", 1)[-1] for w in words[:3] if w)[:48]


@dataclass(frozen=True)
class CpuReading:
    """CPU milliseconds per process over ``wall_ms``; the whole machine's too."""

    per_proc: dict[str, float]
    wall_ms: float
    machine_busy_ms: float
    machine_total_ms: float
    foreign_ms: dict[str, float] = field(default_factory=dict)

    def total(self) -> float:
        """CPU ms of all the processes measured."""
        return sum(self.per_proc.values())

    def per_thousand(self, count: int) -> float | None:
        """CPU ms per 1,000 units of work (requests, deliveries); None when nothing was done."""
        return self.total() * 1000 / count if count else None

    def unattributed_ms(self, others_ms: float = 0.0) -> float:
        """Machine CPU used by neither these processes nor ``others_ms`` (load generators).

        Kernel work not charged to any process shows here, and so does anything
        else running on the machine: a large figure means the run was disturbed.
        """
        return self.machine_busy_ms - self.total() - others_ms

    def as_dict(self) -> dict[str, object]:
        """For the JSON record."""
        rounded = {name: round(ms, 1) for name, ms in self.per_proc.items()}
        busy_pct = (
            100 * self.machine_busy_ms / self.machine_total_ms if self.machine_total_ms else 0
        )
        return {
            "cpu_ms": rounded,
            "wall_ms": round(self.wall_ms, 1),
            "machine_busy_pct": round(busy_pct, 1),
            "foreign_cpu_ms": self.foreign_ms,
        }


class CpuMeter:
    """Started at the beginning of an interval; :meth:`read` at its end."""

    def __init__(self, procs: Iterable[Proc]) -> None:
        self._procs = list(procs)
        self._start = {proc.name: proc.cpu_ms() for proc in self._procs}
        self._machine = machine_cpu_ms()
        self._table = process_table()
        self._wall = time.monotonic()

    def read(self) -> CpuReading:
        """CPU used by each process, and by the machine, since the meter was made."""
        used = {proc.name: proc.cpu_ms() - self._start[proc.name] for proc in self._procs}
        busy, total = machine_cpu_ms()
        wall_ms = (time.monotonic() - self._wall) * 1000
        foreign = foreign_cpu(self._table, process_table())
        return CpuReading(used, wall_ms, busy - self._machine[0], total - self._machine[1], foreign)


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

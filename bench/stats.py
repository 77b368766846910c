"""Small measuring helpers: percentiles, and a process's CPU time and memory from /proc."""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from connector.testing.memcap import process_memory_kb as memory_kb

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summary(values: Sequence[float]) -> dict[str, float]:
    """n, mean, p50, p95, p99, max of `values`."""
    return {
        "n": len(values),
        "mean": sum(values) / len(values) if values else math.nan,
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values) if values else math.nan,
    }


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` (all its threads), in seconds; NaN when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return math.nan
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class Sampler:
    """Samples a process's RSS and CPU time every `interval_s` in a thread."""

    pid: int
    interval_s: float = 0.1
    times: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        started = time.perf_counter()
        while not self._stop.is_set():
            memory = memory_kb(self.pid)
            cpu = cpu_seconds(self.pid)
            if not memory or math.isnan(cpu):
                return
            self.times.append(time.perf_counter() - started)
            self.rss_mb.append(memory.get("VmRSS", 0) / 1024)
            self.cpu_s.append(cpu)
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

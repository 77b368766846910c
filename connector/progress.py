"""Progress of long work (snapshot copy, resync, verify): a live line on a terminal (rows done,
rate, ETA), a log line every few seconds otherwise."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

log = logging.getLogger(__name__)


class Progress:
    def __init__(
        self, what: str, total: int, stream: TextIO | None = None, interval_s: float = 5.0
    ) -> None:
        self.what = what
        self.total = total
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.interval_s = 0.2 if self.tty else interval_s
        self.started = time.monotonic()
        self._last = 0.0

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 and self.total > self.done else 0.0
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return (
            f"{self.what}: {self.done}/{self.total} rows ({pct:.0f}%), "
            f"{rate:.0f} rows/s, ETA {eta:.0f}s"
        )

    def advance(self, rows: int) -> None:
        self.done += rows
        now = time.monotonic()
        if now - self._last < self.interval_s:
            return
        self._last = now
        if self.tty:
            self.stream.write("\r" + self.line())
            self.stream.flush()
        else:
            log.info("%s", self.line())

    def finish(self) -> None:
        elapsed = time.monotonic() - self.started
        if self.tty:
            self.stream.write("\r" + self.line() + "\n")
            self.stream.flush()
        log.info("%s: %d rows in %.1fs", self.what, self.done, elapsed)

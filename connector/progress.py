"""Progress of long work (snapshot copy, resync, a rebuild followed by `connector reindex`, the
demo's indexing): one bar redrawn in place on a terminal (rows done of total, rate, ETA, time
elapsed), plain lines every few seconds otherwise: written to the stream given, else logged.

The rate is measured from the start of the work this object sees (rows already done when it
starts are not counted), and shown only once that interval means something (`MIN_INTERVAL_S`
and at least one row): a first line right after the first batch has no rate and no ETA, rather
than the batch divided by microseconds.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import TextIO

log = logging.getLogger(__name__)

MIN_INTERVAL_S = 1.0  # a rate over less than this is noise (or a batch over microseconds)
_BAR_WIDTH = 24
_TTY_INTERVAL_S = 0.2


@dataclass(frozen=True, slots=True)
class Pace:
    rate: float  # rows per second
    eta_s: float  # seconds left at that rate


def pace(
    done: int, total: int, elapsed_s: float, since: int = 0, min_interval_s: float = MIN_INTERVAL_S
) -> Pace | None:
    """The rate of the rows done past `since` over `elapsed_s`, and the time left for the rest
    of `total` at it; None until at least `min_interval_s` has passed and a row was done."""
    moved = done - since
    if elapsed_s < min_interval_s or moved <= 0:
        return None
    rate = moved / elapsed_s
    return Pace(rate, max(total - done, 0) / rate)


def duration(seconds: float) -> str:
    """`42s`, `1m38s`, `2h03m`."""
    whole = max(round(seconds), 0)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def rate(per_s: float) -> str:
    """`305`, `7.5`, `0.26`: whole numbers once they are big enough to need no decimals."""
    return f"{per_s:.0f}" if per_s >= 10 else f"{per_s:.2g}"


def describe(what: str, done: int, total: int, speed: Pace | None) -> str:
    """`what: 500/30454 rows (2%), 305 rows/s, ETA 1m38s` (no rate and ETA without a pace)."""
    return f"{what}: {counts(done, total, speed)}"


def counts(done: int, total: int, speed: Pace | None) -> str:
    pct = 100.0 * done / total if total else 100.0
    text = f"{done}/{total} rows ({pct:.0f}%)"
    if speed is not None:
        text += f", {rate(speed.rate)} rows/s"
        text += f", ETA {duration(speed.eta_s)}" if done < total else ""
    return text


def summary(what: str, done: int, elapsed_s: float, speed: Pace | None, since: int = 0) -> str:
    """`what: 30454 rows in 99.8s, 305 rows/s`: the line at the end (the time is left out when
    rows were done before it started: they took longer)."""
    took = f" in {elapsed_s:.1f}s" if not since else ""
    shown = f", {rate(speed.rate)} rows/s" if speed is not None else ""
    return f"{what}: {done} rows{took}{shown}"


def bar(done: int, total: int, width: int = _BAR_WIDTH) -> str:
    """`[#########---------------]`: the share of `total` done, in ASCII."""
    filled = width if not total else min(width, width * max(done, 0) // total)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


class Progress:
    """Call `advance(rows)` as rows are done (0 redraws the bar), `finish()` at the end."""

    def __init__(
        self,
        what: str,
        total: int,
        stream: TextIO | None = None,
        interval_s: float = 5.0,
        done: int = 0,
    ) -> None:
        self.what = what
        self.total = total
        self.done = done
        self.since = done  # rows done before this object started: not in the rate
        self.logged = stream is None  # no stream given: lines go to the log (the daemon's)
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.interval_s = _TTY_INTERVAL_S if self.tty else interval_s
        self.started = time.monotonic()
        self._last: float | None = None  # when a line was last shown
        self._shown = -1  # rows done at the last plain line
        self._width = 0  # of the bar last drawn, to blank what a shorter one leaves

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def pace(self) -> Pace | None:
        return pace(self.done, self.total, self.elapsed(), self.since)

    def line(self) -> str:
        return describe(self.what, self.done, self.total, self.pace())

    def advance(self, rows: int) -> None:
        self.done += rows
        now = time.monotonic()
        if self._last is not None and now - self._last < self.interval_s:
            return
        if not self.tty and self.done == self._shown:
            return  # nothing moved: no line repeating the last one
        self._last = now
        self._show()

    def finish(self) -> None:
        if self.tty:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
        done = summary(self.what, self.done, self.elapsed(), self.pace(), self.since)
        if self.logged:
            log.info("%s", done)
        elif not self.tty:
            self._write(done)

    def _show(self) -> None:
        if self.tty:
            self._draw()
        elif self.logged:
            log.info("%s", self.line())
        else:
            self._write(self.line())
        self._shown = self.done

    def _draw(self) -> None:
        shown = counts(self.done, self.total, self.pace())
        text = (
            f"{self.what} {bar(self.done, self.total)} {shown}, {duration(self.elapsed())} elapsed"
        )
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)

    def _write(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

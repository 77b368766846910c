"""connector.progress: the rate and ETA of a long job, its bar on a terminal (a real pty) and its
plain lines elsewhere. The rate is measured from the job's start and shown only over a
meaningful interval: `connector reindex` once printed `500/30454 rows (2%), 73855246 rows/s,
ETA 0s` as its first line (a batch divided by microseconds; the real rate was about 305)."""

from __future__ import annotations

import io
import os
import tty

from connector.progress import Progress, bar, describe, duration, pace


def test_a_first_batch_seen_microseconds_after_the_start_has_no_rate_and_no_eta() -> None:
    assert pace(500, 30454, elapsed_s=6.77e-6) is None
    assert describe("rebuild", 500, 30454, pace(500, 30454, 6.77e-6)) == (
        "rebuild: 500/30454 rows (2%)"
    )


def test_the_rate_counts_only_rows_done_since_the_start_over_the_time_since() -> None:
    speed = pace(1110, 30454, elapsed_s=2.0, since=500)  # 610 rows in 2 s, 500 before
    assert speed is not None
    assert speed.rate == 305.0
    assert round(speed.eta_s) == round((30454 - 1110) / 305)
    assert describe("rebuild", 1110, 30454, speed) == (
        "rebuild: 1110/30454 rows (4%), 305 rows/s, ETA 1m36s"
    )


def test_no_rate_while_nothing_moved_and_no_negative_eta_past_the_total() -> None:
    assert pace(500, 1000, elapsed_s=60.0, since=500) is None  # a model loading: no "0 rows/s"
    speed = pace(1200, 1000, elapsed_s=2.0)
    assert speed is not None and speed.eta_s == 0.0
    done = pace(1000, 1000, elapsed_s=2.0)
    assert describe("copy", 1000, 1000, done) == "copy: 1000/1000 rows (100%), 500 rows/s"
    assert describe("copy", 3, 1000, pace(3, 1000, 40.0)) == (
        "copy: 3/1000 rows (0%), 0.075 rows/s, ETA 3h41m"  # slow, not "0 rows/s"
    )


def test_durations_read_as_a_person_would_say_them() -> None:
    assert [duration(s) for s in (0, 42.4, 98, 3600 + 180)] == ["0s", "42s", "1m38s", "1h03m"]


def test_the_bar_fills_with_the_share_done() -> None:
    assert bar(0, 100, width=10) == "[----------]"
    assert bar(50, 100, width=10) == "[#####-----]"
    assert bar(150, 100, width=10) == "[##########]"
    assert bar(0, 0, width=4) == "[####]"  # nothing to do is done


def test_a_stream_that_is_not_a_terminal_gets_plain_lines_without_carriage_returns() -> None:
    out = io.StringIO()  # a pipe, a file: not a terminal
    progress = Progress("rebuild of documents", 30454, out, interval_s=0)
    progress.advance(500)  # right after the start: no rate yet
    progress.advance(0)  # nothing moved: no line repeating the last one
    progress.started -= 2.0  # two seconds later
    progress.advance(110)
    progress.finish()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0] == "rebuild of documents: 500/30454 rows (2%)", lines
    assert lines[1].startswith("rebuild of documents: 610/30454 rows (2%), 305 rows/s, ETA "), lines
    assert lines[2].startswith("rebuild of documents: 610 rows in 2.0s, 305 rows/s"), lines
    assert len(lines) == 3, lines


def test_rows_done_before_the_progress_started_are_not_in_its_rate() -> None:
    out = io.StringIO()
    progress = Progress("rebuild", 30454, out, interval_s=0, done=500)  # seen after a batch
    progress.advance(0)
    progress.started -= 2.0
    progress.advance(610)
    progress.finish()
    assert out.getvalue().splitlines() == [
        "rebuild: 500/30454 rows (2%)",
        "rebuild: 1110/30454 rows (4%), 305 rows/s, ETA 1m36s",
        "rebuild: 1110 rows, 305 rows/s",  # not "1110 rows in 2.0s": 500 took longer
    ]


def test_a_terminal_gets_one_bar_redrawn_in_place() -> None:
    leader, follower = os.openpty()
    tty.setraw(follower)  # what is written arrives as written (no \n -> \r\n)
    with open(follower, "w", encoding="utf-8") as terminal:
        progress = Progress("indexing documents", 2732, terminal)
        progress.advance(0)
        progress.started -= 4.0
        progress.advance(1366)  # within 0.2 s of the last draw: not drawn
        progress._last = None  # as if 0.2 s had passed
        progress.advance(0)
        progress.finish()
    shown = os.read(leader, 65536).decode()
    os.close(leader)
    draws = shown.split("\r")[1:]
    assert draws[0].startswith("indexing documents [------------------------] 0/2732 rows (0%)")
    assert draws[1].startswith(
        "indexing documents [############------------] 1366/2732 rows (50%), 341 rows/s, ETA 4s,"
    ), draws
    assert "elapsed" in draws[1]
    assert shown.endswith("\n"), repr(shown)
    assert "\n" not in "".join(draws[:-1]), "a bar line was ended before the finish"

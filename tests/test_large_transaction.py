"""One source transaction far larger than a batch (a bulk `INSERT ... SELECT`): staged in pieces
in bounded memory while searches keep answering, invisible until all of it is in, and
converging after SIGKILLs in the middle of its staging."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import redis

from connector.query import visibility_filter
from connector.sink.redis_client import command, search_total
from connector.testing.daemon import DaemonProcess, DaemonThread
from tests.support import assert_index_equals_table, make_settings, synced

Start = Callable[..., DaemonThread]
ROWS = int(os.environ.get("CONNECTOR_TEST_BIG_TRANSACTION_ROWS", "200000"))
RSS_LIMIT_MB = 300


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Reader(threading.Thread):
    """Counts the transaction's rows a reader sees, as an external client reads (with the
    documented visibility filter), and how long each search takes."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url)
        self.halt = threading.Event()
        self.seen: set[int] = set()
        self.searches = 0
        self.slowest_s = 0.0

    def run(self) -> None:
        while not self.halt.is_set():
            started = time.perf_counter()
            where = f"{visibility_filter(self.client, 'test_slot')} @source:{{bulk}}"
            reply = command(self.client, "FT.SEARCH", "documents", where, "LIMIT", "0", "0")
            self.slowest_s = max(self.slowest_s, time.perf_counter() - started)
            self.seen.add(search_total(reply))
            self.searches += 1
            time.sleep(0.001)


def test_a_huge_transaction_is_staged_in_pieces_invisibly_and_survives_sigkills(
    migrated_dsn: str, redis_url: str, tmp_path: Path
) -> None:
    settings = make_settings(
        migrated_dsn, redis_url, pipeline={"transaction_piece_rows": 2000, "gc_grace_s": 1}
    )
    daemon = DaemonProcess.for_settings(settings, tmp_path)
    daemon.start()
    daemon.wait_for_checkpoint(streaming=True)
    reader = Reader(redis_url)
    reader.start()
    client = redis.Redis.from_url(redis_url)
    peaks = []
    try:
        with psycopg.connect(migrated_dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO documents (title, body, source) SELECT 'row ' || i, "
                "'the body of bulk row number ' || i, 'bulk' FROM generate_series(1, %s) i",
                [ROWS],
            )
        for fraction in (0.15, 0.4):  # SIGKILL twice while the transaction is being staged
            daemon.wait_until(
                lambda f=fraction: int(client.dbsize()) > ROWS * f,
                timeout_s=300,
                what=f"{fraction:.0%} of the rows are staged",
            )
            peaks.append(peak_rss_mb(daemon.pid))
            daemon.kill()
            assert reader.seen <= {0}, "a reader saw part of the transaction before its commit"
            daemon.start()
        found = synced(settings, migrated_dsn, timeout_s=600)
        peaks.append(peak_rss_mb(daemon.pid))
        time.sleep(0.1)
    finally:
        reader.halt.set()
        reader.join()
        daemon.stop()
    assert reader.seen <= {0, ROWS}, f"a reader saw part of the transaction: {sorted(reader.seen)}"
    assert ROWS in reader.seen
    assert reader.searches >= min(10_000, ROWS // 20), f"only {reader.searches} searches"
    assert max(peaks) < RSS_LIMIT_MB, f"the daemon's peak RSS was {max(peaks):.0f} MB"
    assert reader.slowest_s < 1.0, f"a search waited {reader.slowest_s:.2f}s behind staging"
    hits = found.search("the body of bulk row number 77", k=10)
    assert len(hits) == 10 and all(int(h.key[0]) <= ROWS for h in hits)
    assert_index_equals_table(settings, migrated_dsn)
    client.close()


def test_metadata_cleared_in_a_later_piece_of_the_same_transaction_is_cleared(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    """Both pieces stage the row at the transaction's LSN, so the same chunk hashes: the
    later piece must remove the tag the earlier one set (found by the reliability suite)."""
    settings = make_settings(migrated_dsn, redis_url, pipeline={"transaction_piece_rows": 20})
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO documents (id, title, body) VALUES (1, 'kept', 'one body')")
    run_connector(settings)
    synced(settings, migrated_dsn)
    with psycopg.connect(migrated_dsn) as conn, conn.transaction():
        conn.execute("UPDATE documents SET tags = '{tagged}' WHERE id = 1")
        for i in range(2, 60):  # pieces of 20 changes: the next update lands in a later piece
            conn.execute("INSERT INTO documents (id, title, body) VALUES (%s, 'f', 'filler')", [i])
        conn.execute("UPDATE documents SET tags = '{}' WHERE id = 1")  # no tag: no field
    found = synced(settings, migrated_dsn)
    assert found.search("kept one body", k=5, filters={"tags": "tagged"}) == []
    assert_index_equals_table(settings, migrated_dsn)

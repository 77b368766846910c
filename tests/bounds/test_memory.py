"""The daemon's memory is bounded by construction, proved on the real daemon (`connector run`, a
subprocess) under a real cap of 384 MB (a memory cgroup where the machine allows one, else RSS
sampling: connector.testing.memcap). Each test ends with the same daemon process alive (never
OOM-killed, never restarted), under the cap, and `verify` clean."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from connector.config import Settings
from connector.core.keys import deadletter_key, encode_key
from connector.core.versions import Manifest
from connector.errors import NotCaughtUpError
from connector.query import Searcher
from connector.sink.layout import current_keys
from connector.testing.daemon import DaemonProcess
from connector.testing.memcap import CappedDaemon
from tests.support import DOCUMENTS, assert_index_equals_table, keys_of, make_settings, synced

CAP_MB = 384
# Single-chunk rows, a FLAT index of small vectors: Redis is fast, the daemon's Python is measured.
TABLE: dict[str, Any] = {**DOCUMENTS, "vector": {"algorithm": "flat"}}


def capped_settings(dsn: str, redis_url: str, **pipeline: object) -> Settings:
    return make_settings(
        dsn, redis_url, [TABLE], embedding={"dimensions": 32}, pipeline={**pipeline}
    )


@pytest.fixture
def capped(migrated_dsn: str, redis_url: str, tmp_path: Path) -> Iterator[tuple[Settings, Path]]:
    # Shipped pipeline defaults: the read-ahead queue holds 5,000 changes, which both sizes of
    # the UPDATE below fill, so what is compared is what grows with the transaction.
    yield capped_settings(migrated_dsn, redis_url), tmp_path


def start(settings: Settings, folder: Path) -> CappedDaemon:
    return CappedDaemon(DaemonProcess.for_settings(settings, folder), CAP_MB)


def fill(dsn: str, rows: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO documents (id, title, body, source) SELECT g, 'row ' || g, "
            "'the body of row ' || g || ' with a few more words', 'web' "
            "FROM generate_series(1, %s) AS g",
            [rows],
        )


def caught_up(running: CappedDaemon, settings: Settings, dsn: str, timeout_s: float) -> Searcher:
    """`synced`, failing at once (naming the cap) if the daemon dies or restarts meanwhile."""
    deadline = time.monotonic() + timeout_s
    while True:
        running.assert_healthy("while catching up")
        try:
            return synced(settings, dsn, timeout_s=2)
        except NotCaughtUpError:
            if time.monotonic() > deadline:
                raise


def update_phase(running: CappedDaemon, settings: Settings, dsn: str, where: str) -> float:
    """One UPDATE of the rows `where` selects, in one transaction; the daemon's peak RSS
    (MB) from just before it until all of it is searchable."""
    running.cap.reset_peak()
    print(f"before UPDATE {where}: RSS {running.cap.rss_mb():.1f} MB")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"UPDATE documents SET body = body || ' changed' WHERE {where}")
    caught_up(running, settings, dsn, 240)
    running.assert_healthy(f"after the UPDATE of rows {where}")
    return running.cap.peak_mb()


def test_the_peak_rss_of_one_huge_update_does_not_grow_with_its_size(
    capped: tuple[Settings, Path],
) -> None:
    settings, folder = capped
    dsn = settings.postgres.dsn.get_secret_value()
    small, large = 20_000, 100_000
    fill(dsn, large)
    with start(settings, folder) as running:
        running.daemon.wait_for_checkpoint(timeout_s=240, streaming=True)
        update_phase(running, settings, dsn, "id <= 2000")  # warm: every code path once
        small_peak = update_phase(running, settings, dsn, f"id <= {small}")
        superseded_rows_are_collected(settings, [1, small // 2, small])
        large_peak = update_phase(running, settings, dsn, "true")
        print(f"peak RSS: {small:,} rows {small_peak:.1f} MB, {large:,} rows {large_peak:.1f} MB")
        print(running.cap.how)
        assert large_peak - small_peak < 10, (
            f"one UPDATE of {large:,} rows peaked at {large_peak:.1f} MB, of {small:,} rows at "
            f"{small_peak:.1f} MB: the daemon's memory grows with the transaction's size"
        )
        assert_index_equals_table(settings, dsn)
        running.assert_healthy("at the end")


def superseded_rows_are_collected(settings: Settings, ids: list[int]) -> None:
    """The versions the UPDATEs superseded go (handed over per piece, past 10,000 through
    Redis): the spill lists empty, the rows keep their current version only."""
    client = redis.Redis.from_url(redis_url(settings))
    keys = current_keys(client, "documents")
    rows = [keys.row("public.documents", encode_key((str(i),))) for i in ids]

    def collected() -> bool:
        spilled = list(client.scan_iter(match=f"{keys.prefix}:gc:*"))
        return not spilled and all(len(Manifest.parse(client.hgetall(r)).versions) == 1
                                   for r in rows)  # fmt: skip

    started = time.monotonic()
    while not collected():
        assert time.monotonic() < started + 120, "superseded versions were not collected"
        time.sleep(0.5)
    print(f"superseded versions collected in {time.monotonic() - started:.1f}s")
    client.close()


def test_one_50_mb_row_is_indexed_cut_at_the_limit_and_the_stream_goes_on(
    capped: tuple[Settings, Path],
) -> None:
    settings, folder = capped
    dsn = settings.postgres.dsn.get_secret_value()
    limit = settings.tables[0].max_content_tokens
    with start(settings, folder) as running:
        running.daemon.wait_for_checkpoint(timeout_s=60, streaming=True)
        with psycopg.connect(dsn, autocommit=True) as conn:
            # One paragraph of 54 MB (no blank line): a single token window would hold all of it.
            conn.execute(
                "INSERT INTO documents (id, title, body) VALUES "
                "(1, 'huge', 'aardvark ' || repeat('lorem ipsum dolor sit amet ', 2000000))"
            )
            conn.execute("INSERT INTO documents (id, title, body) VALUES (2, 'small', 'zebra')")
        found = caught_up(running, settings, dsn, 180)
        running.assert_healthy("after the 50 MB row")
        assert keys_of(found, "zebra", k=1) == [("2",)]  # committed after it: applied
        hits = [h for h in found.search("aardvark lorem ipsum", k=5) if h.key == ("1",)]
        assert hits and all(h.metadata.get("content_truncated") == str(limit) for h in hits)
        assert redis.Redis.from_url(redis_url(settings)).xlen(deadletter_key("documents")) == 0
        print(f"peak RSS with a 54 MB row: {running.cap.peak_mb():.1f} MB ({running.cap.how})")
        assert_index_equals_table(settings, dsn)
        running.assert_healthy("at the end")


def redis_url(settings: Settings) -> str:
    return settings.redis.url.get_secret_value()


def flood(dsn: str, seconds: float, stop: threading.Event) -> int:
    """Small transactions on a table nobody configured, as fast as Postgres takes them (a
    server-side loop committing each row): how many."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS unrelated (id bigint, at timestamptz)")
        conn.execute(
            """CREATE OR REPLACE PROCEDURE flood(seconds float, OUT n bigint) LANGUAGE plpgsql
            AS $$ DECLARE stop timestamptz := clock_timestamp() + seconds * interval '1 s';
            BEGIN n := 0; WHILE clock_timestamp() < stop LOOP
              INSERT INTO unrelated VALUES (n, now()); n := n + 1; COMMIT;
            END LOOP; END $$"""
        )
        total = 0
        while not stop.is_set() and seconds > 0:
            row = conn.execute("CALL flood(%s, NULL)", [min(seconds, 5.0)]).fetchone()
            total += int(row[0]) if row else 0
            seconds -= 5.0
        return total


def test_a_pause_at_maxmemory_under_a_flood_of_other_transactions_holds_memory_flat(
    capped: tuple[Settings, Path],
) -> None:
    settings, folder = capped
    dsn = settings.postgres.dsn.get_secret_value()
    admin = redis.Redis.from_url(redis_url(settings))
    fill(dsn, 100)
    with start(settings, folder) as running:
        running.daemon.wait_for_checkpoint(timeout_s=60, streaming=True)
        synced(settings, dsn)
        before = running.cap.rss_mb()
        running.cap.reset_peak()
        admin.config_set("maxmemory", 1)  # every write refused (noeviction)
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("UPDATE documents SET body = body || ' paused' WHERE id <= 10")
            flooded = flood(dsn, 12.0, threading.Event())
            # A reconnect inside the pause (here: the stream cut) is the same episode.
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(
                    "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                    "WHERE slot_name = %s",
                    [settings.postgres.slot],
                )
            flooded += flood(dsn, 13.0, threading.Event())
            running.assert_healthy("while Redis was full")
            paused_peak = running.cap.peak_mb()
        finally:
            admin.config_set("maxmemory", 0)
        caught_up(running, settings, dsn, 120)
        errors = running.daemon.lines(" ERROR ")
        print(
            f"{flooded:,} transactions while paused; RSS {before:.1f} MB before, peak "
            f"{paused_peak:.1f} MB while paused; {len(errors)} ERROR lines"
        )
        assert paused_peak - before < 10, (
            f"{flooded:,} empty transactions queued while Redis was full grew the daemon from "
            f"{before:.1f} MB to {paused_peak:.1f} MB"
        )
        assert len(errors) == 1 and "maxmemory" in errors[0], errors  # one per episode
        assert running.daemon.reconnects >= 1, "the stream was not cut"
        assert_index_equals_table(settings, dsn)
        running.assert_healthy("at the end")
        admin.close()

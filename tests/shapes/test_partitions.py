"""Partitioned tables, configured by the parent's name, through the real daemon: every change of
every leaf partition (any depth, created or attached while streaming) is indexed under the
parent; rows moved between partitions end up once; TRUNCATE of one partition removes only its
rows; a detached partition's rows are reported by `verify` and removed by `--repair`."""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
import pytest

from connector.config import Settings, TableSettings
from connector.embed import make_embedder
from connector.errors import ConfigError
from connector.ops.verify import repair, verify
from connector.query import Searcher
from connector.sink.redis_client import client_for
from connector.source.catalog import inspect_table
from connector.testing.daemon import DaemonThread
from tests.support import assert_index_equals_table, make_settings, synced

Start = Callable[[Settings], DaemonThread]

EVENTS = {
    "name": "public.events",
    "index": "events",
    "content": ["title", "body"],
    "metadata": {"tag": "tag"},
    "chunk_tokens": 64,
    "chunk_overlap": 8,
}

SCHEMA = """
CREATE TABLE events (
    id bigint NOT NULL, created date NOT NULL, title text, body text, tag text,
    PRIMARY KEY (id, created)
) PARTITION BY RANGE (created);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')
    PARTITION BY RANGE (created);
CREATE TABLE events_2025_h1 PARTITION OF events_2025
    FOR VALUES FROM ('2025-01-01') TO ('2025-07-01');
CREATE TABLE events_2025_h2 PARTITION OF events_2025
    FOR VALUES FROM ('2025-07-01') TO ('2026-01-01');
"""


def _row(conn: psycopg.Connection[tuple[object, ...]], n: int, day: str) -> None:
    conn.execute(
        "INSERT INTO events (id, created, title, body, tag) VALUES (%s, %s, %s, %s, 'x')",
        [n, day, f"Event {n}", f"the word zq{n}word belongs to event {n} only"],
    )


def _keys(found: Searcher, n: int) -> list[tuple[str, ...]]:
    return [hit.key for hit in found.search(f"zq{n}word", k=3) if f"zq{n}word" in hit.content]


def _assert_rows(
    settings: Settings, dsn: str, present: dict[int, str | tuple[int, str]], gone: list[int]
) -> None:
    """Each word zq<n>word of `present` finds exactly its row (n, day), or (id, day)."""
    found = synced(settings, dsn)
    for n, where in present.items():
        key, day = where if isinstance(where, tuple) else (n, where)
        assert _keys(found, n) == [(str(key), day)], f"word {n}: event {key} ({day})"
    for n in gone:
        assert _keys(found, n) == [], f"event {n} should be gone"


def test_changes_of_every_partition_are_indexed_under_the_parent(
    pg_dsn: str, redis_url: str, run_connector: Start
) -> None:
    settings = make_settings(pg_dsn, redis_url, [EVENTS])
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
        _row(conn, 1, "2024-03-01")
        _row(conn, 2, "2025-02-01")
        _row(conn, 3, "2025-08-01")
        run_connector(settings)
        _assert_rows(settings, pg_dsn, {1: "2024-03-01", 2: "2025-02-01", 3: "2025-08-01"}, [])

        # Inserts, updates and deletes in every leaf, two levels deep.
        _row(conn, 4, "2024-04-01")
        _row(conn, 5, "2025-03-01")
        _row(conn, 6, "2025-09-01")
        conn.execute("UPDATE events SET body = 'now zq7word instead' WHERE id = 3")
        conn.execute("DELETE FROM events WHERE id = 2")
        # A row moved to another partition: a delete in one leaf, an insert in another.
        conn.execute("UPDATE events SET created = '2025-10-01' WHERE id = 1")
        _assert_rows(
            settings, pg_dsn,
            {1: "2025-10-01", 4: "2024-04-01", 5: "2025-03-01", 6: "2025-09-01",
             7: (3, "2025-08-01")},
            [2, 3],
        )  # fmt: skip

        # A partition created while streaming, written in the transaction that creates it.
        with conn.transaction():
            conn.execute(
                "CREATE TABLE events_2026 PARTITION OF events "
                "FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')"
            )
            _row(conn, 8, "2026-05-01")
        # A table with rows attached as a partition (its earlier changes were not the table's).
        conn.execute("CREATE TABLE events_2027 (LIKE events INCLUDING ALL)")
        conn.execute(
            "INSERT INTO events_2027 (id, created, title, body) VALUES "
            "(9, '2027-01-05', 'Event 9', 'attached zq9word row')"
        )
        synced(settings, pg_dsn)  # the daemon saw that insert as one of another table's
        conn.execute(
            "ALTER TABLE events ATTACH PARTITION events_2027 "
            "FOR VALUES FROM ('2027-01-01') TO ('2028-01-01')"
        )
        _row(conn, 10, "2027-02-01")
        # The attached rows come from a copy of the new partition (within a few seconds).
        deadline = time.monotonic() + 20
        while not _keys(synced(settings, pg_dsn), 9) and time.monotonic() < deadline:
            time.sleep(0.2)
        _assert_rows(settings, pg_dsn, {8: "2026-05-01", 9: "2027-01-05", 10: "2027-02-01"}, [])

        # TRUNCATE of one partition: only its rows go (and a row written after it stays).
        with conn.transaction():
            conn.execute("TRUNCATE events_2024")
            _row(conn, 11, "2024-06-01")
        _assert_rows(settings, pg_dsn, {11: "2024-06-01", 5: "2025-03-01"}, [4])
        assert_index_equals_table(settings, pg_dsn)

        # TRUNCATE of the parent: every partition's rows go.
        with conn.transaction():
            conn.execute("TRUNCATE events")
            _row(conn, 12, "2025-01-02")
        _assert_rows(settings, pg_dsn, {12: "2025-01-02"}, [1, 5, 6, 8, 9, 10, 11])
        assert_index_equals_table(settings, pg_dsn)


def _eventually_gone(settings: Settings, dsn: str, n: int) -> None:
    deadline = time.monotonic() + 20
    while _keys(synced(settings, dsn), n) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _keys(synced(settings, dsn), n) == [], f"event {n} should be gone"


def test_a_detached_or_dropped_partition_leaves_the_index(
    pg_dsn: str, redis_url: str, run_connector: Start
) -> None:
    settings = make_settings(pg_dsn, redis_url, [EVENTS])
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
        _row(conn, 1, "2024-03-01")
        _row(conn, 2, "2025-08-01")
        _row(conn, 3, "2025-02-01")
        daemon = run_connector(settings)
        _assert_rows(settings, pg_dsn, {1: "2024-03-01", 2: "2025-08-01", 3: "2025-02-01"}, [])

        # Noticed by the daemon itself: a DETACH or a DROP is not in the stream.
        conn.execute("ALTER TABLE events_2025 DETACH PARTITION events_2025_h2")
        conn.execute(
            "INSERT INTO events_2025_h2 (id, created, title, body) "
            "VALUES (4, '2025-09-01', 'Event 4', 'standalone zq4word')"
        )
        _eventually_gone(settings, pg_dsn, 2)
        conn.execute("DROP TABLE events_2024")
        _eventually_gone(settings, pg_dsn, 1)
        _row(conn, 5, "2025-03-01")
        _assert_rows(settings, pg_dsn, {3: "2025-02-01", 5: "2025-03-01"}, [1, 2, 4])
        assert_index_equals_table(settings, pg_dsn)

        # While the daemon is down: `verify` reports the rows, `--repair` removes them.
        daemon.finish()
        conn.execute("ALTER TABLE events_2025 DETACH PARTITION events_2025_h1")
    drifts = verify(settings)
    assert sorted(key for d in drifts for key in d.orphaned) == ["3,2025-02-01", "5,2025-03-01"]
    embedder = make_embedder(settings.embedding, client_for(settings.redis))
    repair(settings, embedder, drifts)
    embedder.close()
    assert all(d.clean for d in verify(settings))
    run_connector(settings)
    _assert_rows(settings, pg_dsn, {}, [1, 2, 3, 4, 5])
    assert_index_equals_table(settings, pg_dsn)


def test_inheritance_and_overlapping_tables_are_refused(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
        conn.execute("CREATE TABLE notes_old (archived date) INHERITS (notes)")
        table = TableSettings(name="public.notes", content=["body"])
        with pytest.raises(ConfigError, match="INHERITS"):
            inspect_table(conn, table)

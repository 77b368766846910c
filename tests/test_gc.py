"""Garbage collection against the real services: superseded versions, deletes, truncates and
leftovers of a crash are removed after the grace period, and searches never miss a row; an
index of the previous schema is rebuilt."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import psycopg
import pytest
import redis

from connector.config import Settings
from connector.core.keys import Keyspace
from connector.core.versions import Manifest
from connector.testing.daemon import DaemonThread
from tests.support import assert_index_equals_table, keys_of, make_settings, synced

Start = Callable[..., DaemonThread]
KEYS = Keyspace("documents")
TABLE = "public.documents"
GRACE_S = 0.5


def gc_settings(dsn: str, redis_url: str) -> Settings:
    return make_settings(dsn, redis_url, pipeline={"gc_grace_s": GRACE_S})


def chunk_keys(client: redis.Redis, key: str) -> set[bytes]:
    return set(client.scan_iter(match=f"{KEYS.chunk_prefix}{TABLE}:{key}:*"))


def eventually(check: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "garbage collection did not get there in time"
        time.sleep(0.1)


def execute(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def test_superseded_versions_go_after_the_grace_period_and_searches_keep_finding_the_row(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    settings = gc_settings(migrated_dsn, redis_url)
    running = run_connector(settings, probes=True)
    client = redis.Redis.from_url(redis_url)
    execute(migrated_dsn, "INSERT INTO documents (id, title, body) VALUES (1, 'first', 'alpha')")
    synced(settings, migrated_dsn)
    first = chunk_keys(client, "1")
    for n in range(5):
        execute(migrated_dsn, f"UPDATE documents SET body = 'version {n}' WHERE id = 1")
    found = synced(settings, migrated_dsn)
    assert keys_of(found, "first version 4") == [("1",)]
    assert len(Manifest.parse(client.hgetall(KEYS.row(TABLE, "1"))).versions) > 1
    eventually(lambda: len(Manifest.parse(client.hgetall(KEYS.row(TABLE, "1"))).versions) == 1)
    eventually(lambda: len(chunk_keys(client, "1")) == 1)
    assert not first & chunk_keys(client, "1"), "the first version's chunk is still there"
    assert keys_of(found, "first version 4") == [("1",)]
    assert running.metric("connector_gc_removed_total", kind="chunk")
    assert_index_equals_table(settings, migrated_dsn)
    client.close()


def test_a_deleted_row_keeps_a_tombstone_with_a_ttl_and_a_truncate_clears_the_table(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    settings = gc_settings(migrated_dsn, redis_url)
    run_connector(settings)
    client = redis.Redis.from_url(redis_url)
    execute(
        migrated_dsn,
        "INSERT INTO documents (id, title, body) VALUES (1, 'a', 'one'), (2, 'b', 'two'),"
        " (3, 'c', 'three')",
        "DELETE FROM documents WHERE id = 1",
    )
    synced(settings, migrated_dsn)
    eventually(lambda: not chunk_keys(client, "1") and client.ttl(KEYS.row(TABLE, "1")) > 0)
    tomb = Manifest.parse(client.hgetall(KEYS.row(TABLE, "1")))
    assert [v.deleted for v in tomb.versions] == [True]
    assert 0 < client.ttl(KEYS.row(TABLE, "1")) <= settings.pipeline.tombstone_ttl_s
    execute(migrated_dsn, "TRUNCATE documents")
    synced(settings, migrated_dsn)
    eventually(lambda: not list(client.scan_iter(match=f"{KEYS.chunk_prefix}*")))
    eventually(lambda: not client.exists(KEYS.row(TABLE, "2"), KEYS.row(TABLE, "3")))
    assert_index_equals_table(settings, migrated_dsn)
    client.close()


def test_leftover_chunks_of_a_crash_are_found_by_the_sweep(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    """A chunk hash staged for a version that was never written (a crash between the two)."""
    settings = gc_settings(migrated_dsn, redis_url)
    run_connector(settings)
    client = redis.Redis.from_url(redis_url)
    execute(migrated_dsn, "INSERT INTO documents (id, title, body) VALUES (1, 'a', 'kept')")
    synced(settings, migrated_dsn)
    leftover = KEYS.chunk(TABLE, "1", "deadbeef@1")
    client.hset(leftover, mapping={"content": "never listed", "lsn": 1, "table": TABLE})
    eventually(lambda: not client.exists(leftover))
    assert len(chunk_keys(client, "1")) == 1
    assert_index_equals_table(settings, migrated_dsn)
    client.close()


def test_an_index_of_the_previous_schema_is_rebuilt_with_a_warning(
    migrated_dsn: str, redis_url: str, run_connector: Start, caplog: pytest.LogCaptureFixture
) -> None:
    """An index an older connector built (schema 2: chunks numbered per row) is never read as
    if it were versioned: it is dropped with its keys and copied again."""
    settings = gc_settings(migrated_dsn, redis_url)
    execute(migrated_dsn, "INSERT INTO documents (id, title, body) VALUES (1, 'kept', 'row one')")
    client = redis.Redis.from_url(redis_url)
    client.hset(
        "documents:meta",
        mapping={"provider": "hashing", "model": "hashing-v1",
                 "dimensions": str(settings.embedding.dimensions), "schema_version": "2"},
    )  # fmt: skip
    client.hset(KEYS.chunk(TABLE, "9", "0"), mapping={"content": "old layout", "table": TABLE})
    client.hset(KEYS.row(TABLE, "9"), mapping={"lsn": "5", "hashes": "abc"})
    with caplog.at_level(logging.WARNING, logger="connector.sink.schema"):
        run_connector(settings)
    assert any("schema version 2" in r.getMessage() for r in caplog.records)
    assert not client.exists(KEYS.chunk(TABLE, "9", "0"), KEYS.row(TABLE, "9"))
    found = synced(settings, migrated_dsn)
    assert keys_of(found, "row one") == [("1",)]
    assert client.hget("documents:meta", "schema_version") == b"3"
    assert_index_equals_table(settings, migrated_dsn)
    client.close()

"""Strange rows and schema changes: each has a clear outcome (indexed, skipped with a warning,
or dead-lettered), and the daemon keeps running."""

from __future__ import annotations

import logging
import random
import string
import time
from collections.abc import Callable

import psycopg
import pytest

from connector.config import Settings
from connector.core.chunking import TRUNCATED_FIELD
from connector.core.keys import Keyspace, deadletter_key
from connector.errors import ConfigError
from connector.sink.redis_client import connect
from connector.testing.daemon import DaemonThread
from tests.support import assert_index_equals_table, keys_of, make_settings, newest_version, synced

Start = Callable[[Settings], DaemonThread]
KEYS = Keyspace("documents")
TABLE = "public.documents"


def dead_letters(url: str, index: str = "documents") -> list[dict[str, str]]:
    client = connect(url)
    try:
        return [
            {k.decode(): v.decode() for k, v in fields.items()}
            for _id, fields in client.xrange(deadletter_key(index))
        ]
    finally:
        client.close()


def test_null_empty_and_blank_content_is_skipped_with_a_warning(
    migrated_dsn: str, redis_url: str, run_connector: Start, caplog: pytest.LogCaptureFixture
) -> None:
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE documents ALTER COLUMN body DROP NOT NULL")
        conn.execute("ALTER TABLE documents ALTER COLUMN title DROP NOT NULL")
    settings = make_settings(migrated_dsn, redis_url)
    run_connector(settings)
    with caplog.at_level(logging.WARNING, logger="connector.flow.planner"):
        with psycopg.connect(migrated_dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO documents (id, title, body) VALUES (1, NULL, NULL), (2, '', ''),"
                " (3, '   ', E'\\n\\t '), (4, NULL, 'only a body')"
            )
        found = synced(settings, migrated_dsn)
    assert keys_of(found, "only a body") == [("4",)]
    warned = [r.getMessage() for r in caplog.records if "no text to index" in r.getMessage()]
    assert len(warned) == 3 and all("kept out of search" in w for w in warned)
    assert dead_letters(redis_url) == []
    assert_index_equals_table(settings, migrated_dsn)


def test_large_unicode_and_control_character_bodies_are_indexed(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    settings = make_settings(
        migrated_dsn,
        redis_url,
        tables=[
            {
                "name": "public.documents",
                "index": "documents",
                "content": ["title", "body"],
                "metadata": {"source": "tag"},
                "chunk_tokens": 512,
                "chunk_overlap": 16,
            }
        ],
    )
    rng = random.Random(5)
    vocabulary = [
        "".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(5000)
    ]
    big = "\n\n".join(" ".join(rng.choices(vocabulary, k=150)) for _ in range(5_000_000 // 900))
    assert len(big) > 5_000_000
    rows = [
        (1, "huge", big),
        (2, "emoji", "Launch day 🚀🔥 with 👩🏽‍💻 engineers"),
        (3, "cjk", "東京都の天気予報は晴れのち曇りです"),
        (4, "rtl", "مرحبا بالعالم שלום עולם"),
        (5, "control", "bell\x07 backspace\x08 escape\x1b[31m formfeed\x0c vtab\x0b end"),
    ]
    run_connector(settings)
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        for row in rows:
            conn.execute("INSERT INTO documents (id, title, body) VALUES (%s, %s, %s)", row)
    found = synced(settings, migrated_dsn, timeout_s=120)
    assert ("3",) in keys_of(found, "東京都の天気予報は晴れのち曇りです", k=3)
    assert ("4",) in keys_of(found, "مرحبا بالعالم שלום עולם", k=3)
    assert ("2",) in keys_of(found, "Launch day 🚀🔥 engineers", k=3)
    assert ("5",) in keys_of(found, "bell backspace escape formfeed", k=3)
    client = connect(redis_url)
    # Indexed up to [[tables]] max_content_tokens (100,000 by default; the text has ~1M), and
    # marked as cut.
    version = newest_version(client, KEYS, TABLE, "1")
    assert 100_000 // 512 < len(version.chunks) < 1000
    first = client.hget(KEYS.chunk(TABLE, "1", version.chunks[0]), TRUNCATED_FIELD)
    assert first is not None
    client.close()
    assert dead_letters(redis_url) == []
    assert_index_equals_table(settings, migrated_dsn)


def test_every_common_column_type_works_as_metadata(
    pg_dsn: str, redis_url: str, run_connector: Start
) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')")
        conn.execute(
            "CREATE TABLE things (id int PRIMARY KEY, body text, doc jsonb, raw json, "
            "labels text[], amount numeric(40, 20), seen timestamptz, blob bytea, feeling mood, "
            "flag boolean, ratio double precision)"
        )
        conn.execute(
            "INSERT INTO things VALUES (1, 'typed row', '{\"a\": [1, 2]}', '[true, null]', "
            "'{red,\"dark blue\"}', 12345678901234567890.12345678901234567890, "
            "'2024-05-06 07:08:09.123+02', '\\x00ff10', 'happy', true, 0.5)"
        )
    metadata = {
        "doc": "text",
        "raw": "tag",
        "labels": "tag",
        "amount": "numeric",
        "seen": "numeric",
        "blob": "tag",
        "feeling": "tag",
        "flag": "tag",
        "ratio": "numeric",
    }
    table = {"name": "things", "index": "things", "content": ["body"], "metadata": metadata}
    settings = make_settings(pg_dsn, redis_url, tables=[table])
    run_connector(settings)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO things (id, body, labels, feeling) VALUES (2, 'streamed row', "
            "'{green}', 'sad')"
        )
    found = synced(settings, pg_dsn)
    from connector.query import searcher

    things = searcher(settings, "things")
    hit = things.search("typed row", k=1)[0]
    assert hit.key == ("1",)
    assert hit.metadata["labels"] == "red,dark blue"
    assert hit.metadata["feeling"] == "happy" and hit.metadata["flag"] == "true"
    assert hit.metadata["blob"] == "\\x00ff10"
    assert float(hit.metadata["amount"]) == pytest.approx(1.2345678901234567e19)
    assert float(hit.metadata["seen"]) == pytest.approx(1714972089.123)
    assert float(hit.metadata["ratio"]) == 0.5
    assert "a" in hit.metadata["doc"]
    filters: list[dict[str, object]] = [
        {"labels": "dark blue"},
        {"feeling": "happy"},
        {"seen": (1714972089, 1714972090)},
        {"amount": (1e19, None)},
        {"flag": "true"},
    ]
    for where in filters:
        assert [h.key for h in things.search("row", k=5, filters=where)] == [("1",)], where  # type: ignore[arg-type]
    assert [h.key for h in things.search("row", k=5, filters={"labels": "green"})] == [("2",)]
    _ = found
    assert_index_equals_table(settings, pg_dsn)


@pytest.mark.parametrize(
    ("setup", "fix"),
    [
        ("CREATE TABLE nokey (id int, body text)", "no primary key"),
        (
            "CREATE TABLE nokey (id int PRIMARY KEY, body text); "
            "ALTER TABLE nokey REPLICA IDENTITY NOTHING",
            "REPLICA IDENTITY FULL",
        ),
    ],
)
def test_a_table_that_would_lose_changes_is_refused_at_start(
    pg_dsn: str, redis_url: str, setup: str, fix: str
) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(setup)
    settings = make_settings(pg_dsn, redis_url, tables=[{"name": "nokey", "content": ["body"]}])
    with pytest.raises(ConfigError, match=fix):
        DaemonThread(settings).start()


def test_schema_changes_while_running(
    migrated_dsn: str, redis_url: str, run_connector: Start, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(
        migrated_dsn,
        redis_url,
        pipeline={"status_interval_s": 0.2},
        tables=[
            {
                "name": "public.documents",
                "index": "documents",
                "content": ["title", "body"],
                "metadata": {"source": "tag"},
            }
        ],
    )
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE other (id int PRIMARY KEY, body text)")
    run_connector(settings)
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO documents (id, title, body) VALUES (1, 'before', 'changes')")
        conn.execute("INSERT INTO other VALUES (1, 'not configured: never indexed')")
        conn.execute("ALTER TABLE documents ADD COLUMN extra text DEFAULT 'x'")  # ignored
        conn.execute("INSERT INTO documents (id, title, body) VALUES (2, 'added', 'a column')")
        found = synced(settings, migrated_dsn)
        assert keys_of(found, "added a column", k=1) == [("2",)]
        assert all(h.table == TABLE for h in found.search("not configured never indexed"))
        conn.execute("ALTER TABLE documents RENAME COLUMN body TO text_body")
        conn.execute("INSERT INTO documents (id, title, text_body) VALUES (3, 'renamed', 'x')")
        conn.execute("ALTER TABLE documents DROP COLUMN source")
        conn.execute("INSERT INTO documents (id, title, text_body) VALUES (4, 'dropped', 'y')")
        found = synced(settings, migrated_dsn)
    letters = dead_letters(redis_url)
    assert len(letters) == 2
    assert all("dropped or renamed" in letter["error"] for letter in letters)
    assert keys_of(found, "added a column", k=1) == [("2",)]  # still running and searchable
    with caplog.at_level(logging.ERROR, logger="connector.flow.monitor"):
        with psycopg.connect(migrated_dsn, autocommit=True) as conn:
            conn.execute("ALTER TABLE documents RENAME TO documents_old")
        deadline = time.monotonic() + 10
        while not any("no longer exists" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "a renamed table went unnoticed"
            time.sleep(0.1)

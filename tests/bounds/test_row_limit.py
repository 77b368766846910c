"""A row longer than its table's `max_content_tokens`: indexed cut at the limit, its hits saying
`content_truncated` (also after an update of its other columns), or dead-lettered with the
reason, as `over_max_content` says; `verify` agrees either way."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import redis

from connector.core.keys import deadletter_key
from connector.testing.daemon import DaemonThread
from tests.support import (
    DOCUMENTS,
    assert_index_equals_table,
    incompressible,
    insert,
    keys_of,
    make_settings,
    synced,
)

Start = Callable[..., DaemonThread]
LONG = "aardvark " + incompressible(3000)  # ~9,000 tokens, one paragraph


def test_a_row_over_the_limit_is_indexed_cut_and_says_so(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    # One content column, TOASTed, no old values: an update of other columns does not carry
    # the text, whose chunks (and cut) are kept.
    table = {**DOCUMENTS, "content": ["body"], "max_content_tokens": 500}
    settings = make_settings(migrated_dsn, redis_url, [table])
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE documents REPLICA IDENTITY DEFAULT")
    run_connector(settings)
    insert(migrated_dsn, (1, "long", LONG), (2, "short", "zebra crossing"))
    found = synced(settings, migrated_dsn)
    hits = [h for h in found.search("aardvark", k=20) if h.key == ("1",)]
    assert hits and all(h.metadata["content_truncated"] == "500" for h in hits)
    assert len({h.chunk for h in found.search(LONG[:400], k=100) if h.key == ("1",)}) <= 10
    assert "content_truncated" not in found.search("zebra crossing", k=1)[0].metadata
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        conn.execute("UPDATE documents SET source = 'web' WHERE id = 1")  # body unchanged
    found = synced(settings, migrated_dsn)
    hits = [h for h in found.search("aardvark", k=20, filters={"source": "web"})]
    assert hits and all(h.metadata["content_truncated"] == "500" for h in hits)
    assert_index_equals_table(settings, migrated_dsn)


def test_a_row_over_the_limit_is_dead_lettered_when_the_table_says_so(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    table = {**DOCUMENTS, "max_content_tokens": 500, "over_max_content": "deadletter"}
    settings = make_settings(migrated_dsn, redis_url, [table])
    run_connector(settings)
    insert(migrated_dsn, (1, "long", LONG), (2, "short", "zebra crossing"))
    found = synced(settings, migrated_dsn)
    assert keys_of(found, "zebra crossing", k=1) == [("2",)]
    assert all(h.key != ("1",) for h in found.search("aardvark", k=20))
    client = redis.Redis.from_url(redis_url)
    letters = client.xrange(deadletter_key("documents"))
    assert len(letters) == 1 and b"max_content_tokens (500 tokens)" in letters[0][1][b"error"]
    assert len(letters[0][1][b"row"]) < 2000  # the row's summary, not its text
    client.close()
    assert_index_equals_table(settings, migrated_dsn)

"""UPDATEs that leave out unchanged TOASTed content columns (wal2json sends no placeholder),
under the default replica identity: the connector reads the missing text back by key, as the
least-privilege role, and what the re-read sees converges with the stream."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import redis

from connector.config import Settings
from connector.core.keys import Keyspace, deadletter_key
from connector.testing.daemon import DaemonThread
from tests.support import (
    assert_index_equals_table,
    incompressible,
    keys_of,
    make_settings,
    newest_version,
    synced,
)

Start = Callable[[Settings], DaemonThread]
KEYS = Keyspace("documents")
TABLE = "public.documents"


def default_identity(dsn: str, *rows: tuple[int, str, str]) -> None:
    """The documents table under REPLICA IDENTITY DEFAULT, its body always stored out of line."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE documents REPLICA IDENTITY DEFAULT")
        conn.execute("ALTER TABLE documents ALTER COLUMN body SET STORAGE EXTERNAL")
        for row in rows:
            conn.execute("INSERT INTO documents (id, title, body) VALUES (%s, %s, %s)", row)


def execute(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def vectors(client: redis.Redis, key: str) -> dict[bytes, bytes]:
    """The row's chunk vectors by chunk text."""
    found = {}
    for chunk in newest_version(client, KEYS, TABLE, key).chunks:
        content, vector = client.hmget(KEYS.chunk(TABLE, key, chunk), ["content", "embedding"])
        found[content] = vector
    return found


def test_a_title_edit_of_a_long_document_is_indexed_in_full_as_the_least_privileged_role(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    body = incompressible(3000)  # ~18 kB, out of line: left out of a title-only UPDATE
    default_identity(migrated_dsn, (1, "Old title", body))
    role_dsn = psycopg.conninfo.make_conninfo(migrated_dsn, user="connector")
    settings = make_settings(role_dsn, redis_url)
    running = run_connector(settings)
    synced(settings, migrated_dsn)
    client = redis.Redis.from_url(redis_url)
    before = vectors(client, "1")
    embedded = running.embedder.stats.texts

    execute(migrated_dsn, "UPDATE documents SET title = 'Zanzibar archipelago' WHERE id = 1")
    found = synced(settings, migrated_dsn)
    hit = found.search("Zanzibar archipelago", k=1)[0]
    assert hit.key == ("1",) and hit.content == "Zanzibar archipelago"  # its own paragraph
    assert all("Old title" not in h.content for h in found.search("Old title", k=20))
    after = vectors(client, "1")
    kept = {text for text in after if before.get(text) == after[text]}
    assert len(after) > 3 and len(kept) == len(after) - 1, "only the title's chunk is new"
    assert running.embedder.stats.texts == embedded + 1, "unchanged chunks were embedded again"
    assert running.connector.applier is not None and running.connector.applier.stats.reselected == 1
    assert client.xlen(deadletter_key("documents")) == 0
    assert_index_equals_table(settings, migrated_dsn)
    client.close()


def test_what_the_reread_sees_converges_with_the_changes_that_follow(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    """Re-read after the row was changed again (it sees the newer body) or deleted (it finds
    nothing): each batch holds one transaction, so the later change is applied after it."""
    default_identity(migrated_dsn, (1, "one", incompressible(2000)), (2, "two", "short"))
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        conn.execute("UPDATE documents SET body = %s WHERE id = 2", [incompressible(2100)])
    settings = make_settings(migrated_dsn, redis_url, pipeline={"batch_max_rows": 1})
    running = run_connector(settings)
    synced(settings, migrated_dsn)
    running.stop()
    execute(
        migrated_dsn,
        "UPDATE documents SET title = 'gone soon' WHERE id = 1",
        "DELETE FROM documents WHERE id = 1",
        "UPDATE documents SET title = 'retitled' WHERE id = 2",
        "UPDATE documents SET body = 'a newer body, read back early' WHERE id = 2",
    )
    running = run_connector(settings)
    found = synced(settings, migrated_dsn)
    assert ("1",) not in keys_of(found, "gone soon", k=20)
    hit = found.search("retitled newer body read back early", k=1)[0]
    assert hit.key == ("2",) and hit.content == "retitled\n\na newer body, read back early"
    client = redis.Redis.from_url(redis_url)
    assert client.xlen(deadletter_key("documents")) == 0
    assert newest_version(client, KEYS, TABLE, "1").deleted
    assert_index_equals_table(settings, migrated_dsn)
    client.close()


def test_a_table_dropped_before_the_reread_dead_letters_the_row_with_the_reason(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    default_identity(migrated_dsn, (1, "title", incompressible(2000)))
    settings = make_settings(migrated_dsn, redis_url)
    run_connector(settings)
    synced(settings, migrated_dsn)
    with psycopg.connect(migrated_dsn) as conn:  # one transaction: the re-read comes too late
        conn.execute("UPDATE documents SET title = 'last words' WHERE id = 1")
        conn.execute("DROP TABLE documents")
    synced(settings, migrated_dsn)
    client = redis.Redis.from_url(redis_url)
    letters = client.xrange(deadletter_key("documents"))
    assert len(letters) == 1
    fields = {k.decode(): v.decode() for k, v in letters[0][1].items()}
    assert fields["table"] == TABLE and "body" in fields["error"]
    assert "does not exist" in fields["error"] and "dropped or renamed" in fields["error"]
    client.close()


def test_replica_identity_full_needs_no_reread(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:  # FULL, as the migrations set
        conn.execute("ALTER TABLE documents ALTER COLUMN body SET STORAGE EXTERNAL")
        conn.execute(
            "INSERT INTO documents (id, title, body) VALUES (1, 'a', %s)", [incompressible(2000)]
        )
    settings = make_settings(migrated_dsn, redis_url)
    running = run_connector(settings)
    synced(settings, migrated_dsn)
    execute(migrated_dsn, "UPDATE documents SET title = 'Kilimanjaro' WHERE id = 1")
    found = synced(settings, migrated_dsn)
    assert found.search("Kilimanjaro", k=1)[0].content == "Kilimanjaro"
    assert running.connector.applier is not None and running.connector.applier.stats.reselected == 0
    assert_index_equals_table(settings, migrated_dsn)

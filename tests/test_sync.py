"""The sync core against real Postgres (wal2json) and Redis Stack: what a user of search() sees."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import redis

from connector.config import Settings
from connector.core.keys import Keyspace
from connector.core.lsn import Lsn
from connector.core.versions import id_text_hash
from connector.query import searcher, visibility_filter
from connector.sink.checkpoint import read_checkpoint
from connector.sink.redis_client import command, connect, search_total
from connector.source.catalog import inspect_table
from connector.testing.config import write_config
from connector.testing.daemon import DaemonThread, spawn
from tests.support import (
    DOCUMENTS,
    assert_index_equals_table,
    incompressible,
    keys_of,
    make_settings,
    newest_version,
    synced,
    wal_lsn,
)

Start = Callable[[Settings], DaemonThread]


def test_insert_update_delete_truncate_show_in_search(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    settings = make_settings(migrated_dsn, redis_url)
    run_connector(settings)
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO documents (id, title, body, source) VALUES "
            "(1, 'Penguins', 'Penguins are flightless seabirds of the southern hemisphere', 'zoo'),"
            "(2, 'Volcanoes', 'A volcano is a rupture in the crust of a planet', 'geo')"
        )
        found = synced(settings, migrated_dsn)
        assert found.search("flightless seabirds penguins", k=1)[0].key == ("1",)
        hit = found.search("volcano crust rupture", k=1)[0]
        assert (hit.key, hit.table, hit.metadata["source"]) == (("2",), "public.documents", "geo")

        conn.execute(
            "UPDATE documents SET body = 'Glaciers are rivers of ice', "
            "title = 'Glaciers', source = 'ice' WHERE id = 2"
        )
        found = synced(settings, migrated_dsn)
        hit = found.search("glaciers rivers of ice", k=1)[0]
        assert hit.key == ("2",) and "Glaciers" in hit.content and hit.metadata["source"] == "ice"
        assert all("volcano" not in h.content for h in found.search("volcano crust", k=10))

        conn.execute("DELETE FROM documents WHERE id = 1")
        found = synced(settings, migrated_dsn)
        assert ("1",) not in keys_of(found, "penguins flightless seabirds")

        conn.execute("TRUNCATE documents")
        found = synced(settings, migrated_dsn)
        assert found.search("glaciers", k=10) == []
        conn.execute("INSERT INTO documents (id, title, body) VALUES (3, 'After', 'truncate')")
        found = synced(settings, migrated_dsn)
        assert keys_of(found, "after truncate") == [("3",)]
    assert_index_equals_table(settings, migrated_dsn)


def test_transaction_is_visible_all_at_once(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    settings = make_settings(migrated_dsn, redis_url, pipeline={"batch_max_rows": 50})
    run_connector(settings)
    client = connect(redis_url)
    seen: set[int] = set()
    done = threading.Event()

    def watch() -> None:  # as an external client reads: with the documented visibility filter
        while not done.is_set():
            where = f"{visibility_filter(client, 'test_slot')} @source:{{bulk}}"
            reply = command(client, "FT.SEARCH", "documents", where, "LIMIT", "0", "0")
            seen.add(search_total(reply))

    watcher = threading.Thread(target=watch)
    watcher.start()
    with psycopg.connect(migrated_dsn) as conn:
        with conn.transaction():
            for i in range(300):
                conn.execute(
                    "INSERT INTO documents (title, body, source) VALUES (%s, %s, 'bulk')",
                    [f"t{i}", f"body number {i}"],
                )
        with conn.transaction():  # rolled back: must leave no trace
            conn.execute("INSERT INTO documents (title, body, source) VALUES ('x', 'y', 'ghost')")
            raise psycopg.Rollback()
    synced(settings, migrated_dsn)
    time.sleep(0.05)
    done.set()
    watcher.join()
    assert seen <= {0, 300}, f"a reader saw part of the transaction: {sorted(seen)}"
    assert 300 in seen
    reply = command(client, "FT.SEARCH", "documents", "@source:{ghost}", "LIMIT", "0", "0")
    assert search_total(reply) == 0
    client.close()


@pytest.mark.parametrize("identity", ["DEFAULT", "FULL"])
def test_title_only_update_of_toasted_body_embeds_nothing(
    migrated_dsn: str, redis_url: str, run_connector: Start, identity: str
) -> None:
    table = {**DOCUMENTS, "content": ["body"], "metadata": {"title": "text", "source": "tag"}}
    settings = make_settings(migrated_dsn, redis_url, tables=[table])
    body = incompressible(4000)  # ~25 kB: stored out of line (TOAST)
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE documents REPLICA IDENTITY {identity}")
        conn.execute("ALTER TABLE documents ALTER COLUMN body SET STORAGE EXTERNAL")
        conn.execute("INSERT INTO documents (id, title, body) VALUES (7, 'old title', %s)", [body])
    running = run_connector(settings)
    found = synced(settings, migrated_dsn)
    client = redis.Redis.from_url(redis_url)
    keys = Keyspace("documents")
    before = newest_version(client, keys, "public.documents", "7")
    vector = client.hget(keys.chunk("public.documents", "7", before.chunks[0]), "embedding")
    embedded = running.embedder.stats.texts
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        conn.execute("UPDATE documents SET title = 'new title' WHERE id = 7")
    found = synced(settings, migrated_dsn)
    assert running.embedder.stats.texts == embedded, "unchanged text was sent to the embedder"
    after = newest_version(client, keys, "public.documents", "7")
    assert [id_text_hash(c) for c in after.chunks] == [id_text_hash(c) for c in before.chunks]
    assert client.hget(keys.chunk("public.documents", "7", after.chunks[0]), "embedding") == vector
    hits = found.search(body[:200], k=50)
    assert hits and all(h.metadata["title"] == "new title" for h in hits if h.key == ("7",))
    assert_index_equals_table(settings, migrated_dsn)
    client.close()


def test_shorter_body_deletes_chunks_and_edits_reembed_only_changed_chunks(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    settings = make_settings(migrated_dsn, redis_url)
    paragraphs = [f"Paragraph {i}: " + incompressible(30 + i) for i in range(20)]
    running = run_connector(settings)
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO documents (id, title, body) VALUES (1, 'Long', %s)",
            ["\n\n".join(paragraphs)],
        )
        synced(settings, migrated_dsn)
        client = redis.Redis.from_url(redis_url)
        keys = Keyspace("documents")
        assert len(newest_version(client, keys, "public.documents", "1").chunks) >= 8

        embedded = running.embedder.stats.texts
        edited = list(paragraphs)
        edited[10] = "Paragraph 10 was rewritten entirely with new words about comets."
        conn.execute("UPDATE documents SET body = %s WHERE id = 1", ["\n\n".join(edited)])
        synced(settings, migrated_dsn)
        assert 1 <= running.embedder.stats.texts - embedded <= 2
        assert_index_equals_table(settings, migrated_dsn)

        conn.execute("UPDATE documents SET body = 'Just one short paragraph now.' WHERE id = 1")
        found = synced(settings, migrated_dsn)
        assert len(newest_version(client, keys, "public.documents", "1").chunks) == 1
        assert [h.chunk for h in found.search("paragraph", k=50)] == [0]
        client.close()
    assert_index_equals_table(settings, migrated_dsn)


def test_confirmed_lsn_never_ahead_of_checkpoint(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    settings = make_settings(migrated_dsn, redis_url)
    run_connector(settings)
    client = redis.Redis.from_url(redis_url)
    samples = 0
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        for i in range(60):
            conn.execute("INSERT INTO documents (title, body) VALUES (%s, 'b')", [f"row {i}"])
            row = conn.execute(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                "WHERE slot_name = 'test_slot'"
            ).fetchone()
            checkpoint = read_checkpoint(client, "test_slot")
            if row and row[0] and checkpoint:
                assert Lsn.parse(str(row[0])) <= checkpoint.lsn
                samples += 1
            time.sleep(0.02)
        synced(settings, migrated_dsn)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # it does confirm, eventually
            row = conn.execute(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                "WHERE slot_name = 'test_slot'"
            ).fetchone()
            checkpoint = read_checkpoint(client, "test_slot")
            assert row is not None and checkpoint is not None
            if Lsn.parse(str(row[0])) == checkpoint.lsn:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the connector never confirmed its checkpoint to Postgres")
    assert samples > 30
    client.close()


def test_composite_uuid_and_text_keys(pg_dsn: str, redis_url: str, run_connector: Start) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (org text, slug text, body text, PRIMARY KEY (org, slug))")
        conn.execute("CREATE TABLE things (id uuid PRIMARY KEY, body text)")
    tables = [
        {"name": "notes", "index": "notes", "content": ["body"]},
        {"name": "things", "index": "things", "content": ["body"]},
    ]
    settings = make_settings(pg_dsn, redis_url, tables=tables)
    run_connector(settings)
    uid = "6f1c1ad2-63c5-4c1a-8d2e-6e0a3a9d8f00"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO notes VALUES ('a:b', 'c d', 'colons and spaces'), "
            "('a', 'b:c d', 'the other split'), ('a,b', 'c%', 'comma percent')"
        )
        conn.execute("INSERT INTO things VALUES (%s, 'a uuid keyed thing')", [uid])
    found = synced(settings, pg_dsn)
    assert keys_of(found, "colons and spaces", k=1) == [("a:b", "c d")]
    assert keys_of(found, "the other split", k=1) == [("a", "b:c d")]
    assert keys_of(found, "comma percent", k=1) == [("a,b", "c%")]
    assert [h.key for h in searcher(settings, "things").search("uuid keyed", k=1)] == [(uid,)]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM notes WHERE org = 'a:b'")
        conn.execute("UPDATE notes SET slug = 'moved' WHERE org = 'a'")  # the key itself changes
    found = synced(settings, pg_dsn)
    assert ("a:b", "c d") not in keys_of(found, "colons and spaces")
    assert keys_of(found, "the other split", k=1) == [("a", "moved")]
    assert_index_equals_table(settings, pg_dsn)


def test_min_lsn_reads_your_writes(migrated_dsn: str, redis_url: str, run_connector: Start) -> None:
    settings = make_settings(migrated_dsn, redis_url)
    run_connector(settings)
    found = searcher(settings)
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        for i in range(20):
            words = f"zebra{i} quokka{i} lynx{i} heron{i}"
            conn.execute(
                "INSERT INTO documents (id, title, body) VALUES (%s, %s, 'fresh')", [100 + i, words]
            )
            hits = found.search(words, k=1, min_lsn=wal_lsn(conn))
            assert hits and hits[0].key == (str(100 + i),)


def test_filter_values_with_query_syntax_match_literally(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    settings = make_settings(migrated_dsn, redis_url)
    run_connector(settings)
    nasty = "a|b @c {d} (e) -f *g"
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO documents (id, title, body, source) VALUES "
            "(1, 'one', 'same words', %s), (2, 'two', 'same words', 'a'), "
            "(3, 'three', 'same words', 'b')",
            [nasty],
        )
    found = synced(settings, migrated_dsn)
    assert keys_of(found, "same words", filters={"source": nasty}) == [("1",)]
    assert sorted(keys_of(found, "same words", filters={"source": ["a", "b"]})) == [("2",), ("3",)]
    assert keys_of(found, "same words", filters={"source": "*"}) == []
    with pytest.raises(ValueError, match="unknown filter field"):
        found.search("x", filters={"body) | (@source": "x"})


def test_snapshot_of_existing_rows_while_a_writer_runs(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO documents (title, body, source) "
            "SELECT 'title ' || i, 'body of row ' || i || ' ' || md5(i::text), 's' || (i % 7) "
            "FROM generate_series(1, 5000) i"
        )
    stop = threading.Event()
    writes = [0]

    def writer() -> None:
        with psycopg.connect(migrated_dsn, autocommit=True) as conn:
            i = 0
            while not stop.is_set():
                i += 1
                conn.execute(
                    "UPDATE documents SET body = body || ' edit' WHERE id = %s",
                    [1 + (i * 37) % 5000],
                )
                conn.execute("INSERT INTO documents (title, body) VALUES ('w', %s)", [f"new {i}"])
                conn.execute("DELETE FROM documents WHERE id = %s", [1 + (i * 53) % 5000])
                writes[0] += 3

    thread = threading.Thread(target=writer)
    thread.start()
    settings = make_settings(migrated_dsn, redis_url, pipeline={"batch_max_rows": 500})
    try:
        time.sleep(0.3)
        run_connector(settings)
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join()
    synced(settings, migrated_dsn, timeout_s=60)
    assert writes[0] > 30
    assert_index_equals_table(settings, migrated_dsn)


def test_sigkill_mid_stream_then_restart_converges(
    migrated_dsn: str, redis_url: str, tmp_path: Path
) -> None:
    settings = make_settings(migrated_dsn, redis_url, pipeline={"batch_max_rows": 100})
    config = write_config(tmp_path / "connector.toml", settings)
    log = tmp_path / "connector.log"
    process = spawn(config, log)
    client = redis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + 30
        while read_checkpoint(client, "test_slot") is None:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        changes = 0
        with psycopg.connect(migrated_dsn, autocommit=True) as conn:
            for i in range(340):
                with conn.transaction():
                    for j in range(4):
                        conn.execute(
                            "INSERT INTO documents (id, title, body, source) "
                            "VALUES (%s, %s, %s, 'k')",
                            [i * 10 + j, f"t{i}", f"body {i} {j} {'word ' * j}"],
                        )
                    conn.execute(
                        "UPDATE documents SET body = body || ' more', source = 'u' WHERE id = %s",
                        [i * 10],
                    )
                    conn.execute("DELETE FROM documents WHERE id = %s", [i * 10 + 1])
                    changes += 6
                if i == 170:
                    process.send_signal(signal.SIGKILL)
                    process.wait()
            last = wal_lsn(conn)
        assert changes >= 2000
        process = spawn(config, log)
        found = searcher(settings)
        found.wait_for(last, timeout_s=60)
        assert_index_equals_table(settings, migrated_dsn)
        checkpoint = read_checkpoint(client, "test_slot")
        assert checkpoint is not None and checkpoint.lsn >= Lsn.parse(last)
        with psycopg.connect(migrated_dsn, autocommit=True) as conn:
            assert checkpoint.lsn <= Lsn.parse(wal_lsn(conn))
    finally:
        process.terminate()
        assert process.wait(30) == 0, log.read_text()
        client.close()


def test_replaying_the_stream_changes_nothing(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    """Feed every change again (as a replay from an old LSN would): deleted rows stay deleted,
    updated rows keep their newest version, and the checkpoint does not move back."""
    from connector.core.rows import collect
    from connector.core.wal2json import TransactionAssembler, decode
    from connector.embed import make_embedder
    from connector.flow.applier import Applier
    from connector.source.replication import wal2json_options

    settings = make_settings(migrated_dsn, redis_url)
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_create_logical_replication_slot('replay_copy', 'wal2json')")
    running = run_connector(settings)
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO documents (id, title, body) VALUES (1, 'gone', 'deleted soon'),"
            " (2, 'kept', 'first version')"
        )
        conn.execute("UPDATE documents SET body = 'second version' WHERE id = 2")
        conn.execute("DELETE FROM documents WHERE id = 1")
        conn.execute("TRUNCATE documents")
        conn.execute("INSERT INTO documents (id, title, body) VALUES (3, 'after', 'truncate')")
        synced(settings, migrated_dsn)
        options = [v for pair in wal2json_options(["public.documents"]).items() for v in pair]
        placeholders = ", ".join(["%s"] * len(options))
        rows = conn.execute(
            f"SELECT lsn::text, data FROM pg_logical_slot_get_changes('replay_copy', NULL, NULL, "
            f"{placeholders})",
            options,
        ).fetchall()
    running.stop()
    checkpoint = read_checkpoint(redis.Redis.from_url(redis_url), "test_slot")
    assembler = TransactionAssembler()
    txns = [
        txn
        for lsn, data in rows
        if (txn := assembler.feed(decode(str(data), Lsn.parse(str(lsn))))) is not None
    ]
    assert sum(len(t.changes) for t in txns) == 6
    client = connect(redis_url)
    writer = Applier(client, settings, make_embedder(settings.embedding))
    with psycopg.connect(migrated_dsn) as conn:
        tables = {"public.documents": inspect_table(conn, settings.tables[0])}
    for txn in txns:  # one transaction at a time, as a replay would apply them
        writer.apply(collect([txn], tables), None)
    assert writer.stats.upserted == 0 and writer.stats.skipped_stale > 0
    assert_index_equals_table(settings, migrated_dsn)
    assert read_checkpoint(client, "test_slot") == checkpoint
    client.close()

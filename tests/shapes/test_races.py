"""Races and pieces: a row truncated (or below a resync floor) and inserted again with the same
text while garbage collection removes its old chunks, and a TRUNCATE in a later piece of a
transaction larger than `pipeline.transaction_piece_rows`.

The race is driven step by step against the real services (plan the insert, collect the old
version, then stage), not by timing; the rest goes through the real daemon. Each test ends with
`verify` clean and a search that finds every current row by a word of its own and none of the
gone ones. A row's own tag (`source`) narrows a search to it: the words it looks for are
checked in the hits' text."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import psycopg
import redis

from connector.config import Settings
from connector.core.changes import Transaction
from connector.core.keys import Keyspace
from connector.core.lsn import Lsn
from connector.core.rows import collect
from connector.core.versions import Manifest
from connector.core.wal2json import TransactionAssembler, decode
from connector.embed import make_embedder
from connector.flow.applier import Applier
from connector.ops.replay import rewind
from connector.query import Searcher
from connector.sink.checkpoint import Checkpoint, read_checkpoint
from connector.source.catalog import inspect_table
from connector.source.replication import wal2json_options
from connector.source.server import system_identifier
from connector.testing.daemon import DaemonThread
from tests.support import assert_index_equals_table, make_settings, synced

Start = Callable[..., DaemonThread]
TABLE = "public.documents"
PIECE_ROWS = 50


def word(side: str, n: int) -> str:
    """A word only row `n` has (letters only: no stemming or number parsing in the way)."""
    return side + "".join("abcdefghij"[int(d)] for d in f"{n:04d}")


def execute(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def insert(conn: psycopg.Connection[tuple[object, ...]], n: int, body: str, group: str) -> None:
    """Row `n`: its own tag (`source`), the group it belongs to (`tags`), and a fixed time
    (the same row inserted again has the same metadata, so its chunks can keep their ids)."""
    conn.execute(
        "INSERT INTO documents (id, title, body, source, tags, updated_at) "
        "VALUES (%s, 'row', %s, %s, %s, '2024-01-01')",
        [n, body, word("row", n), [group]],
    )


def texts_of(found: Searcher, n: int, text: str) -> str:
    """The text of row `n`'s chunks a search for `text` finds."""
    hits = found.search(text, k=20, filters={"source": word("row", n)})
    assert all(h.key == (str(n),) for h in hits)
    return "\n".join(h.content for h in hits)


def assert_found(found: Searcher, rows: Iterable[int], side: str) -> None:
    for n in rows:
        assert word(side, n) in texts_of(found, n, word(side, n)), f"row {n}: no {side} word"


def assert_group(found: Searcher, group: str, rows: Iterable[int]) -> None:
    """Exactly `rows` are found in `group` (none when it is gone)."""
    hits = found.search("body", k=500, filters={"tags": group})  # hits are chunks
    assert {h.key for h in hits} == {(str(n),) for n in rows}, f"group {group}"


# --------------------------------------------------------------------------- the race

HEAD = " ".join(word("head", n) for n in range(40))  # several chunks that an update keeps
TAIL = " ".join(word("tail", n) for n in range(20))
NEW_TAIL = " ".join(word("next", n) for n in range(20))


def changes_of(dsn: str, slot: str) -> list[Transaction]:
    """The transactions a second slot holds (as the daemon's own stream hands them over)."""
    options = [v for pair in wal2json_options([TABLE]).items() for v in pair]
    marks = ", ".join(["%s"] * len(options))
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT lsn::text, data FROM pg_logical_slot_get_changes(%s, NULL, NULL, {marks})",
            [slot, *options],
        ).fetchall()
    assembler = TransactionAssembler()
    found = (assembler.feed(decode(str(data), Lsn.parse(str(lsn)))) for lsn, data in rows)
    return [txn for txn in found if txn is not None]


def chunks_of(client: redis.Redis, keys: Keyspace, key: str) -> set[bytes]:
    return set(client.scan_iter(match=f"{keys.chunk_prefix}{TABLE}:{key}:*"))


def missing_chunks(client: redis.Redis, keys: Keyspace) -> list[str]:
    """Chunk ids row 1's newest version lists that Redis does not hold."""
    newest = Manifest.parse(client.hgetall(keys.row(TABLE, "1"))).newest
    assert newest is not None
    return [c for c in newest.chunks if not client.exists(keys.chunk(TABLE, "1", c))]


def test_a_row_inserted_again_while_its_truncated_chunks_are_collected_is_found(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    """TRUNCATE, then the same row with the same text again: the planner plans the insert,
    garbage collection then removes the truncated version (chunks and manifest), then the
    insert is staged and flipped. The new version must not list the collected chunk ids; a
    later update (which keeps the unchanged chunks' ids) is found too."""
    kept = make_settings(migrated_dsn, redis_url, pipeline={"gc_grace_s": 3600})
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        insert(conn, 1, f"{HEAD}\n\n{TAIL}", "race")
    with run_connector(kept):
        synced(kept, migrated_dsn)
        execute(migrated_dsn, "TRUNCATE documents")
        synced(kept, migrated_dsn)  # the truncated version stays: its grace period is long
    execute(migrated_dsn, "SELECT pg_create_logical_replication_slot('race_copy', 'wal2json')")
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        insert(conn, 1, f"{HEAD}\n\n{TAIL}", "race")  # the same row, the same text
        tables = {TABLE: inspect_table(conn, kept.tables[0])}
        system_id = system_identifier(conn)
    (txn,) = changes_of(migrated_dsn, "race_copy")

    settings = make_settings(migrated_dsn, redis_url, pipeline={"gc_grace_s": 0})
    client = redis.Redis.from_url(redis_url)
    embedder = make_embedder(settings.embedding)
    try:
        applier = Applier(client, settings, embedder, system_id, collect_garbage=True)
        keys = applier.writer.keys[TABLE]
        old = chunks_of(client, keys, "1")
        assert old and Manifest.parse(client.hgetall(keys.row(TABLE, "1"))).versions
        plan = applier.plan(collect([txn], tables))  # 1. the insert is planned
        collector = applier.collector
        assert collector is not None
        collector.flipped(applier.visible, [(TABLE, "1")])  # 2. the old version is collected
        collector.step(budget_s=1.0, at_least=1)
        assert not old & chunks_of(client, keys, "1"), "the truncated chunks were not collected"
        applier.stage(plan, txn.commit_lsn)  # 3. the insert is staged and flipped
    finally:
        embedder.close()
    missing = missing_chunks(client, keys)
    assert not missing, f"the row's new version lists chunks that are gone: {missing}"
    found = synced(settings, migrated_dsn)
    assert_found(found, [1], "head")
    assert_found(found, [1], "tail")

    run_connector(make_settings(migrated_dsn, redis_url, pipeline={"gc_grace_s": 0.2}))
    execute(migrated_dsn, f"UPDATE documents SET body = '{HEAD}\n\n{NEW_TAIL}' WHERE id = 1")
    found = synced(settings, migrated_dsn)
    assert not missing_chunks(client, keys), "the update kept chunk ids that are gone"
    assert_found(found, [1], "head")
    assert_found(found, [1], "next")
    assert word("tail", 1) not in texts_of(found, 1, word("tail", 1))
    assert_group(found, "race", [1])
    assert_index_equals_table(settings, migrated_dsn)
    client.close()


def test_truncate_then_the_same_text_again_through_the_daemon(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    """End to end: TRUNCATE, the same rows again with the same text while garbage collection
    runs (no grace period), then updates that keep most chunks: every row is found each
    time."""
    settings = make_settings(migrated_dsn, redis_url, pipeline={"gc_grace_s": 0})
    run_connector(settings)
    rows = range(1, 31)

    def insert_all() -> None:
        with psycopg.connect(migrated_dsn, autocommit=True) as conn:
            for n in rows:
                insert(conn, n, f"{HEAD}\n\n{word('own', n)} body", "rows")

    insert_all()
    synced(settings, migrated_dsn)
    for _round in range(3):
        execute(migrated_dsn, "TRUNCATE documents")
        insert_all()
        found = synced(settings, migrated_dsn)
        assert_group(found, "rows", rows)
        assert_found(found, rows, "own")
        assert_found(found, rows, "head")
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        for n in rows:
            conn.execute(
                "UPDATE documents SET body = %s WHERE id = %s",
                [f"{HEAD}\n\n{word('later', n)} body", n],
            )
    found = synced(settings, migrated_dsn)
    assert_found(found, rows, "later")
    assert_found(found, rows, "head")
    assert all(word("own", n) not in texts_of(found, n, word("own", n)) for n in rows)
    assert_index_equals_table(settings, migrated_dsn)


# --------------------------------------------------------------------------- pieces


def test_a_truncate_in_a_later_piece_hides_the_rows_earlier_pieces_staged(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    """200 inserts (four pieces of 50), TRUNCATE, 30 other inserts, in one transaction: only
    the 30 are there after the commit."""
    settings = make_settings(
        migrated_dsn, redis_url, pipeline={"transaction_piece_rows": PIECE_ROWS}
    )
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        insert(conn, 9000, "a row from before the transaction", "before")
    run_connector(settings)
    synced(settings, migrated_dsn)
    with psycopg.connect(migrated_dsn) as conn, conn.transaction():
        for n in range(1, 201):
            insert(conn, n, f"{word('early', n)} body", "early")
        conn.execute("TRUNCATE documents")
        for n in range(1001, 1031):
            insert(conn, n, f"{word('late', n)} body", "late")
    found = synced(settings, migrated_dsn)
    assert_group(found, "early", [])
    assert_group(found, "before", [])
    assert_group(found, "late", range(1001, 1031))
    assert_found(found, range(1001, 1031), "late")
    assert all(not texts_of(found, n, word("early", n)) for n in (1, 77, 200))
    assert_index_equals_table(settings, migrated_dsn)


def replayed_to(client: redis.Redis, settings: Settings, before: Checkpoint | None) -> None:
    """Wait until the checkpoint (moved back by `rewind`) is where it was `before` again."""
    assert before is not None
    deadline = time.monotonic() + 30
    while (now := read_checkpoint(client, settings.postgres.slot)) is None or now.lsn < before.lsn:
        assert time.monotonic() < deadline, "the replay did not get back to the checkpoint"
        time.sleep(0.05)


def test_rows_truncated_and_inserted_again_in_later_pieces_are_the_new_ones(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    """INSERT 120 rows, TRUNCATE, INSERT 40 of the same keys again (half with the same text,
    half with new text), in one transaction spanning pieces: exactly those 40 are there, also
    after `connector replay` applied the transaction again."""
    settings = make_settings(
        migrated_dsn,
        redis_url,
        pipeline={"transaction_piece_rows": PIECE_ROWS, "replay_window_s": 3600},
    )
    running = run_connector(settings)
    synced(settings, migrated_dsn)
    client = redis.Redis.from_url(redis_url)
    saved = read_checkpoint(client, settings.postgres.slot)
    assert saved is not None
    with psycopg.connect(migrated_dsn) as conn, conn.transaction():
        for n in range(1, 121):
            insert(conn, n, f"{word('first', n)} body", "same" if n <= 20 else "first")
        conn.execute("TRUNCATE documents")
        for n in range(1, 21):  # the same text: the truncated version's chunk ids come back
            insert(conn, n, f"{word('first', n)} body", "same")
        for n in range(101, 121):  # new text
            insert(conn, n, f"{word('again', n)} body", "new")
    applied: Checkpoint | None = None
    for replayed in (False, True):
        if replayed:  # the same transaction once more, over its own visible versions
            running.stop()
            rewind(settings, saved.lsn)
            running = run_connector(settings)
            replayed_to(client, settings, applied)
        found = synced(settings, migrated_dsn)
        applied = read_checkpoint(client, settings.postgres.slot)
        assert_group(found, "same", range(1, 21))
        assert_group(found, "new", range(101, 121))
        assert_group(found, "first", [])
        assert_found(found, range(1, 21), "first")
        assert_found(found, range(101, 121), "again")
        assert all(not texts_of(found, n, word("first", n)) for n in (21, 50, 77, 100))
        assert word("first", 110) not in texts_of(found, 110, word("first", 110))
        assert_index_equals_table(settings, migrated_dsn)
    client.close()

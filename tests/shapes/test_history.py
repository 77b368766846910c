"""A source with another history (DESIGN.md, "Production shapes"): a real point-in-time restore
(base backup, WAL archive, restore to an LSN in the middle, promote), a filesystem snapshot put
back with its slot, and one put back whose slot was made again by hand. Each time the index holds
commits the source no longer has, with LSNs above the source's: starting the connector is
enough to rebuild it from the source's history (verify clean, every current row found by its
own word, no word of the discarded history found). The decision itself, pure:
tests/unit/test_history.py."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from connector.config import Settings
from connector.core.lsn import Lsn
from connector.query import searcher
from connector.query.searcher import NotCaughtUpError, Searcher
from connector.sink.checkpoint import mark_replaced
from connector.sink.layout import read_record
from connector.source.migrate import apply_migrations
from connector.testing.daemon import DaemonThread
from connector.testing.services import PostgresServer
from tests.support import assert_index_equals_table, make_settings, synced, wal_lsn

Start = Callable[[Settings], DaemonThread]
Row = tuple[int, str]  # id, the word only that version of the row has


def test_a_search_waiting_for_an_lsn_waits_for_the_index_of_the_new_history(
    redis_url: str,
) -> None:
    """While the indexes are rebuilt for another history, the old visible LSN is of the old
    history: an LSN of the new one (lower) is not reached by it."""
    settings = make_settings("postgresql://unused@127.0.0.1:1/none", redis_url)
    client = redis.Redis.from_url(redis_url)
    client.hset("connector:test_slot:checkpoint", mapping={"lsn": "0/9000", "visible": "0/9000"})
    found = searcher(settings)
    assert found.wait_for("0/5000", timeout_s=0.1) == Lsn(0x9000)
    mark_replaced(client, "test_slot", "the source has another history")
    with pytest.raises(NotCaughtUpError, match="rebuilt for another history"):
        found.wait_for("0/5000", timeout_s=0.2)
    client.close()


# --------------------------------------------------------------------------- real histories


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    """A cluster of the test's own (it is stopped, restored and put back), WAL archived, in a
    folder the user Postgres runs as can reach."""
    root = Path(tempfile.mkdtemp(prefix="connector-history-"))
    root.chmod(0o755)
    made = PostgresServer(root / "primary")
    try:
        made.init()
        made.archive_wal(made.folder("archive"))
        made.start()
        yield made
    finally:
        made.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def _body(n: int, word: str) -> str:
    return f"row {n} speaks of {word}"


def _execute(dsn: str, *statements: tuple[str, tuple[object, ...]]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for sql, args in statements:
            conn.execute(sql, args)


def _insert(*rows: Row) -> list[tuple[str, tuple[object, ...]]]:
    return [("INSERT INTO documents (id, title, body) VALUES (%s, 'doc', %s)", (n, _body(n, w)))
            for n, w in rows]  # fmt: skip


def _update(*rows: Row) -> list[tuple[str, tuple[object, ...]]]:
    return [("UPDATE documents SET body = %s WHERE id = %s", (_body(n, w), n)) for n, w in rows]


def _delete(*ids: int) -> list[tuple[str, tuple[object, ...]]]:
    return [("DELETE FROM documents WHERE id = %s", (n,)) for n in ids]


# Several MB of WAL: the discarded history's commits end far beyond where the source now is.
FILLER = (
    "CREATE TABLE filler AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 20000) g",
    (),
)


def _database(server: PostgresServer) -> str:
    _execute(server.dsn(), ("CREATE DATABASE app", ()))
    dsn = server.dsn("app")
    apply_migrations(dsn)
    return dsn


def _words_found(found: Searcher, word: str) -> set[tuple[str, ...]]:
    return {hit.key for hit in found.search(word, k=20) if word in hit.content}


def _check(settings: Settings, dsn: str, current: dict[int, str], gone: list[str]) -> None:
    """`verify` is clean, each current row is found by its word, no gone word is found."""
    found = synced(settings, dsn)
    assert_index_equals_table(settings, dsn)
    for n, word in current.items():
        assert _words_found(found, word) == {(str(n),)}, f"row {n} not found by {word}"
    for word in gone:
        assert not _words_found(found, word), f"{word} of the discarded history found"


def _said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.ERROR and "another history" in r.getMessage()]  # fmt: skip


def test_a_point_in_time_restore_rebuilds_the_index_from_the_restored_history(
    server: PostgresServer,
    redis_url: str,
    run_connector: Start,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dsn = _database(server)
    settings = make_settings(dsn, redis_url)
    _execute(dsn, *_insert((1, "acorn"), (2, "birch"), (3, "cedar"), (4, "dogwood"), (5, "elm")))
    running = run_connector(settings)
    synced(settings, dsn)
    restored = PostgresServer(server.root.parent / "restored", port=server.port)
    server.base_backup(restored)  # the connector's slot is in no base backup
    _execute(dsn, *_update((1, "ridgeline")), *_insert((6, "marigold")), *_delete(5))
    with psycopg.connect(dsn, autocommit=True) as conn:
        middle = wal_lsn(conn)
    # The history the restore discards: updates of rows the restored one has too.
    _execute(dsn, FILLER, *_update((2, "bramble"), (1, "thistle")), *_insert((7, "quagmire")),
             *_delete(3))  # fmt: skip
    _check(settings, dsn, {1: "thistle", 2: "bramble", 7: "quagmire"}, ["cedar", "ridgeline"])
    running.stop()
    server.archive_now()
    server.stop()
    try:
        restored.recover(server.folder("archive"), middle)
        _execute(dsn, *_update((4, "lantern"), (6, "saffron")), *_insert((8, "juniper")))
        running = run_connector(settings)
        current = {1: "ridgeline", 2: "birch", 3: "cedar", 4: "lantern", 6: "saffron", 8: "juniper"}
        gone = ["thistle", "bramble", "quagmire", "elm", "marigold", "dogwood", "acorn"]
        _check(settings, dsn, current, gone)
        running.stop()
    finally:
        restored.stop("immediate")
    (said,) = _said(caplog)
    assert "timeline 2 branched off timeline 1" in said, said
    record = read_record(redis.Redis.from_url(redis_url), "documents")
    assert record is not None and record.current.name.endswith("2"), record  # behind the alias


@pytest.mark.parametrize("slot", ["kept", "made again"])
def test_a_filesystem_snapshot_put_back_rebuilds_the_index_from_its_history(
    server: PostgresServer,
    redis_url: str,
    run_connector: Start,
    caplog: pytest.LogCaptureFixture,
    slot: str,
) -> None:
    """The snapshot holds the connector's slot (`kept`: its position is behind the index), or
    was taken before the slot and the slot is made again by hand after it is put back."""
    dsn = _database(server)
    settings = make_settings(dsn, redis_url)
    snapshot = server.root / "snapshot"
    _execute(dsn, *_insert((1, "acorn"), (2, "birch"), (3, "cedar")))
    if slot == "made again":
        server.stop()
        server.copy_data(snapshot)
        server.start()
        _execute(dsn, *_insert((4, "dogwood")))
    running = run_connector(settings)
    synced(settings, dsn)
    if slot == "kept":
        running.stop()
        server.stop()
        server.copy_data(snapshot)
        server.start()
        running = run_connector(settings)
    _execute(dsn, FILLER, *_update((1, "thistle")), *_insert((5, "quagmire")), *_delete(2))
    _check(settings, dsn, {1: "thistle", 5: "quagmire"}, ["birch"])
    running.stop()
    server.put_back(snapshot)
    if slot == "made again":
        _execute(dsn, ("SELECT pg_create_logical_replication_slot('test_slot', 'wal2json')", ()))
    _execute(dsn, *_update((3, "lantern")), *_insert((6, "juniper")))
    running = run_connector(settings)
    current = {1: "acorn", 2: "birch", 3: "lantern", 6: "juniper"}
    _check(settings, dsn, current, ["thistle", "quagmire", "dogwood", "cedar"])
    running.stop()
    (said,) = _said(caplog)
    expected = "slot's position" if slot == "made again" else "ahead of the server's WAL"
    assert expected in said, said

"""Managed Postgres sets `idle_in_transaction_session_timeout`, `statement_timeout` and
`lock_timeout` low by default (server, database or role). The connector's copies and read-backs
run in long transactions, idle while each batch is embedded, and may queue behind a lock: its
sessions set the three themselves (postgres.*_timeout_ms, 0 = off). Through the real daemon, on
a database whose defaults are set low: the first copy, with a slow embedding provider and the
table locked for a while, completes without a single restart, the stream and the TOAST read-back
work, and `verify` (one long snapshot) is clean."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql

from connector.config import Settings
from connector.ops.verify import verify
from connector.testing.daemon import DaemonThread
from connector.testing.openai_server import FakeOpenAI
from tests.support import (
    assert_index_equals_table,
    incompressible,
    make_settings,
    openai_settings,
    synced,
)

Start = Callable[[Settings], DaemonThread]
ROWS = 300
BATCH = 60  # rows per FETCH of the copy: the session is idle in its transaction between them
EMBED_S = 0.3  # per embedding request: longer than the idle timeout below
LOCK_S = 1.5  # the table is locked this long when the copy starts
LOW = {"idle_in_transaction_session_timeout": "100ms", "statement_timeout": "200ms",
       "lock_timeout": "50ms"}  # fmt: skip


def word(n: int) -> str:
    """A word only row `n` has."""
    return "tok" + "".join("abcdefghij"[int(d)] for d in f"{n:04d}")


def _free(dsn: str) -> str:
    """The test's own sessions keep none of the low defaults."""
    options = " ".join(f"-c {name}=0" for name in LOW)
    return psycopg.conninfo.make_conninfo(dsn, options=options)


def _prepare(dsn: str) -> None:
    with psycopg.connect(_free(dsn), autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY, title text, body text)")
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO notes VALUES (%s, %s, %s)",
                [(n, f"note {n}", f"the word {word(n)} belongs to row {n}") for n in range(ROWS)],
            )
        conn.execute("UPDATE notes SET body = body || %s WHERE id = 1", [incompressible(3000)])
        dbname = conn.info.dbname
        for name, value in LOW.items():
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                    sql.Identifier(dbname), sql.Identifier(name), sql.Literal(value)
                )
            )


def _hold_lock(dsn: str, locked: threading.Event) -> None:
    with psycopg.connect(_free(dsn)) as conn:
        conn.execute("LOCK TABLE notes IN ACCESS EXCLUSIVE MODE")
        locked.set()
        threading.Event().wait(LOCK_S)
        conn.rollback()


@contextlib.contextmanager
def _locked(dsn: str) -> Iterator[None]:
    """ACCESS EXCLUSIVE on the table for LOCK_S, from another session: what comes next queues
    behind it (a lock held by a transaction with an xid: CREATE_REPLICATION_SLOT waits for its
    end too, under lock_timeout)."""
    locked = threading.Event()
    locker = threading.Thread(target=_hold_lock, args=(dsn, locked))
    locker.start()
    try:
        assert locked.wait(10)
        yield
    finally:
        locker.join()


def test_copy_and_read_backs_outlast_low_session_defaults(
    pg_dsn: str, redis_url: str, run_connector: Start, caplog: pytest.LogCaptureFixture
) -> None:
    _prepare(pg_dsn)
    with psycopg.connect(pg_dsn) as conn:  # the defaults apply to a new session
        shown = conn.execute("SHOW idle_in_transaction_session_timeout").fetchone()
        assert shown == ("100ms",)
    server = FakeOpenAI(dimensions=64, latency_s=EMBED_S).start()
    try:
        settings = make_settings(
            pg_dsn, redis_url,
            tables=[{"name": "public.notes", "index": "notes", "content": ["title", "body"]}],
            embedding=openai_settings(server, batch_size=BATCH),
            pipeline={"batch_max_rows": BATCH},
        )  # fmt: skip
        with caplog.at_level(logging.WARNING, logger="connector"):
            with _locked(pg_dsn):
                run_connector(settings)  # ready: the first copy is done
            with psycopg.connect(_free(pg_dsn), autocommit=True) as conn:
                conn.execute("INSERT INTO notes VALUES (%s, 'new', %s)", [ROWS, word(ROWS)])
                conn.execute("DELETE FROM notes WHERE id = 2")
                # Leaves the TOASTed body out: it is read back by key.
                conn.execute("UPDATE notes SET title = %s WHERE id = 1", [word(ROWS + 1)])
            found = synced(settings, _free(pg_dsn))
            restarts = [r.getMessage() for r in caplog.records if "reconnecting" in r.getMessage()]
            assert not restarts, restarts
        for n in (0, 1, ROWS // 2, ROWS - 1, ROWS):
            assert (str(n),) in [hit.key for hit in found.search(word(n), k=3, hybrid=True)], (
                f"row {n}"
            )
        assert (str(1),) in [hit.key for hit in found.search(word(ROWS + 1), k=3, hybrid=True)]
        assert all(word(2) not in hit.content for hit in found.search(word(2), k=10))
        assert_index_equals_table(settings, _free(pg_dsn))
        with _locked(pg_dsn):  # verify's snapshot waits longer than statement_timeout
            drifts = verify(settings)
        assert all(d.clean for d in drifts), [d.summary() for d in drifts]
    finally:
        server.stop()

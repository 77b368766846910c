"""Copying tables into the index from a consistent snapshot: the first start, `connector
resync`, and `connector verify --repair`.

A snapshot exported by a (temporary) wal2json slot sees exactly the transactions committed
before the slot's consistent point C. Every row is written as of C (unchanged chunk texts keep
their vectors), the table's floor is raised to C (so the stream's older changes for it are
skipped: the copy already has them), and rows Redis still holds from before C are removed.
Searches keep answering throughout: rows are replaced in place, never emptied first. Every write
WATCHes its keys, so this runs safely next to a streaming connector.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import psycopg

from connector.catalog import TableInfo, inspect_table
from connector.changes import Transaction
from connector.config import Settings
from connector.embeddings.base import Embedder
from connector.errors import ConfigError, ReplicationError
from connector.index import IndexWriter
from connector.lsn import Lsn
from connector.progress import Progress
from connector.redis_client import client_for
from connector.replication import ReplicationConnection, conninfo
from connector.rows import collect
from connector.snapshot import copy_table, count_rows, open_snapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ResyncReport:
    at: Lsn
    rows: int
    removed: int
    embedded: int


def copy_tables(
    conn: psycopg.Connection[tuple[object, ...]],
    writer: IndexWriter,
    tables: Iterable[TableInfo],
    at: Lsn,
    batch_rows: int,
    stop: threading.Event | None = None,
) -> int:
    """Write every row of `tables`, as `conn`'s snapshot sees them, as of LSN `at`."""
    copied = 0
    for table in tables:
        progress = Progress(f"snapshot of {table.name}", count_rows(conn, table))
        for rows in copy_table(conn, table, batch_rows):
            if stop is not None and stop.is_set():
                raise ReplicationError(f"stopped during the snapshot of {table.name}")
            writer.apply(collect([Transaction(None, at, None, rows)], {table.name: table}), None)
            progress.advance(len(rows))
            copied += len(rows)
        progress.finish()
    return copied


def select_tables(settings: Settings, only: list[str] | None) -> list[str]:
    names = [t.qualified_name for t in settings.tables]
    if not only:
        return names
    chosen = []
    for name in only:
        qualified = name if "." in name else f"public.{name}"
        if qualified not in names:
            raise ConfigError(f"table {name} is not configured (configured: {', '.join(names)})")
        chosen.append(qualified)
    return chosen


def resync(settings: Settings, embedder: Embedder, only: list[str] | None = None) -> ResyncReport:
    """Rebuild the index of the chosen tables (default: all) from a fresh consistent snapshot."""
    chosen = select_tables(settings, only)
    dsn = conninfo(settings.postgres)
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = [inspect_table(conn, t) for t in settings.tables if t.qualified_name in chosen]
    client = client_for(settings.redis)
    repl = ReplicationConnection(settings.postgres)
    repl.slot = f"{settings.postgres.slot}_resync_{os.getpid()}"[:63]
    try:
        writer = IndexWriter(client, settings, embedder)
        writer.ensure_indexes()
        repl.connect()
        at, snapshot = repl.create_slot(export_snapshot=True, temporary=True)
        log.info("resync of %s from a snapshot at %s", ", ".join(chosen), at)
        with open_snapshot(dsn, snapshot) as conn:
            rows = copy_tables(conn, writer, tables, at, settings.pipeline.batch_max_rows)
            conn.rollback()
        for table in tables:
            writer.raise_floor(table.name, at)
        removed = writer.sweep(tables, at)
        log.info("resync done: %d rows copied, %d removed, %d chunks embedded", rows, removed,
                 writer.stats.chunks_embedded)  # fmt: skip
        return ResyncReport(at, rows, removed, writer.stats.chunks_embedded)
    finally:
        repl.close()  # the temporary slot goes with its connection
        client.close()

"""Copying tables into the index from a consistent snapshot: the daemon's first start (and its
resync when the slot and the checkpoint disagree), `connector resync` and `verify --repair`.

A snapshot exported by a wal2json slot sees exactly the transactions committed before the slot's
consistent point C. Every row is written as of C (unchanged chunk texts keep their vectors);
searches keep answering throughout: rows are replaced in place, never emptied first.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable

import psycopg

from connector.core.changes import Transaction
from connector.core.lsn import Lsn
from connector.core.rows import collect
from connector.core.tables import TableInfo
from connector.errors import ReplicationError
from connector.flow.applier import Applier
from connector.flow.stager import Stager
from connector.progress import Progress
from connector.source.snapshot import copy_table, count_rows


def copy_tables(
    conn: psycopg.Connection[tuple[object, ...]],
    applier: Applier,
    tables: Iterable[TableInfo],
    at: Lsn,
    batch_rows: int,
    stop: threading.Event | None = None,
) -> int:
    """Write every row of `tables`, as `conn`'s snapshot sees them, as of LSN `at`."""
    copied = 0
    with Stager() as stager:  # each batch is staged while the next one is read and planned
        for table in tables:
            progress = Progress(f"snapshot of {table.name}", count_rows(conn, table))
            for rows in copy_table(conn, table, batch_rows):
                if stop is not None and stop.is_set():
                    raise ReplicationError(f"stopped during the snapshot of {table.name}")
                effects = collect([Transaction(None, at, None, rows)], {table.name: table})
                plan = applier.plan(effects)  # rows are copied once each: no need to settle
                stager.submit((), functools.partial(applier.stage, plan, None))
                progress.advance(len(rows))
                copied += len(rows)
            stager.drain()
            progress.finish()
    return copied

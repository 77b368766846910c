"""Copying tables into the index from a consistent snapshot: the daemon's first start (and its
resync when the slot and the checkpoint disagree), `connector resync` and `verify --repair`.

A snapshot exported by a wal2json slot sees exactly the transactions committed before the slot's
consistent point C. Every row is written as of C (unchanged chunk texts keep their vectors);
searches keep answering throughout: rows are replaced in place, never emptied first.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psycopg

from connector.config import Settings
from connector.core.changes import Transaction
from connector.core.lsn import Lsn
from connector.core.rows import collect
from connector.core.tables import TableInfo
from connector.errors import ReplicationError
from connector.flow.applier import Applier
from connector.flow.stager import Stager
from connector.progress import Progress
from connector.source.connection import conninfo, open_snapshot
from connector.source.replication import ReplicationConnection
from connector.source.snapshot import copy_table, count_rows

log = logging.getLogger(__name__)


# Reports rows copied so far and rows to copy (a rebuild records them for `status`).
Report = Callable[[int, int], None]
_TEMPORARY_SLOTS = itertools.count(1)


@dataclass(frozen=True, slots=True)
class CopyOptions:
    """How a copy runs, besides what it copies: `stop` ends it between batches, `report` hears
    its progress, `only` names the one partition of the tables to copy."""

    stop: threading.Event | None = None
    report: Report | None = None
    only: str | None = None


def copy_tables(
    conn: psycopg.Connection[tuple[object, ...]],
    applier: Applier,
    tables: Iterable[TableInfo],
    at: Lsn,
    batch_rows: int,
    options: CopyOptions | None = None,
) -> int:
    """Write every row of `tables` (of their partition `options.only`), as `conn`'s snapshot
    sees them, as of LSN `at`."""
    copying = options or CopyOptions()
    stop, report, only = copying.stop, copying.report, copying.only
    chosen = list(tables)
    counts = [count_rows(conn, table, only) for table in chosen]
    copied = 0
    with Stager() as stager:  # each batch is staged while the next one is read and planned
        for table, count in zip(chosen, counts, strict=True):
            progress = Progress(f"snapshot of {table.name}", count)
            for rows in copy_table(conn, table, batch_rows, only):
                if stop is not None and stop.is_set():
                    raise ReplicationError(f"stopped during the snapshot of {table.name}")
                owner = {change.table: table for change in rows}  # the table, or its leaves
                effects = collect([Transaction(None, at, None, rows)], owner)
                plan = applier.plan(effects)  # rows are copied once each: no need to settle
                stager.submit((), functools.partial(applier.stage, plan, None))
                progress.advance(len(rows))
                copied += len(rows)
                if report is not None:
                    report(copied, sum(counts))
            stager.drain()
            progress.finish()
    return copied


def copy_at_new_snapshot(
    settings: Settings,
    applier: Applier,
    tables: list[TableInfo],
    purpose: str,
    options: CopyOptions | None = None,
) -> tuple[Lsn, int]:
    """Copy `tables` as of a fresh consistent snapshot (exported by a temporary slot, which
    goes with its connection), and raise their floors to it: once readers are at that LSN they
    see the copy, and rows the copy did not rewrite are hidden. Returns the LSN and the rows.
    With `options.only` (a partition new to the connector) just its rows are copied, no floor
    raised."""
    options = options or CopyOptions()
    name = f"{settings.postgres.slot}_{purpose}_{os.getpid()}_{next(_TEMPORARY_SLOTS)}"
    repl = ReplicationConnection(settings.postgres, name)
    try:
        repl.connect()
        at, snapshot = repl.create_slot(export_snapshot=True, temporary=True)
        log.info("%s of %s from a snapshot at %s", purpose, ", ".join(t.name for t in tables), at)
        with open_snapshot(conninfo(settings.postgres), snapshot) as conn:
            batch = settings.pipeline.batch_max_rows
            rows = copy_tables(conn, applier, tables, at, batch, options)
            conn.rollback()
    finally:
        repl.close()
    for table in tables if options.only is None else ():
        applier.raise_floor(table.name, at)
    return at, rows

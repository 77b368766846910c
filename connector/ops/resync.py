"""`connector resync`: rebuild chosen tables from a fresh consistent snapshot.

A temporary wal2json slot exports a snapshot at its consistent point C; the tables are copied as
of C (flow.copy), each table's floor is raised to C (so the stream's older changes for it are
skipped: the copy already has them), and rows Redis still holds from before C are removed. Every
write checks its keys, so this runs safely next to a streaming connector.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import psycopg

from connector.config import Settings
from connector.core.lsn import Lsn
from connector.embed.base import Embedder
from connector.errors import ConfigError
from connector.flow.applier import Applier
from connector.flow.copy import copy_tables
from connector.sink.redis_client import client_for
from connector.source.catalog import inspect_table
from connector.source.replication import ReplicationConnection, conninfo
from connector.source.snapshot import open_snapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ResyncReport:
    at: Lsn
    rows: int
    removed: int
    embedded: int


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
    temporary_slot = f"{settings.postgres.slot}_resync_{os.getpid()}"
    repl = ReplicationConnection(settings.postgres, temporary_slot)
    try:
        applier = Applier(client, settings, embedder)
        applier.ensure_indexes()
        repl.connect()
        at, snapshot = repl.create_slot(export_snapshot=True, temporary=True)
        log.info("resync of %s from a snapshot at %s", ", ".join(chosen), at)
        with open_snapshot(dsn, snapshot) as conn:
            rows = copy_tables(conn, applier, tables, at, settings.pipeline.batch_max_rows)
            conn.rollback()
        for table in tables:
            applier.raise_floor(table.name, at)
        removed = applier.sweep(tables, at)
        log.info("resync done: %d rows copied, %d removed, %d chunks embedded", rows, removed,
                 applier.stats.chunks_embedded)  # fmt: skip
        return ResyncReport(at, rows, removed, applier.stats.chunks_embedded)
    finally:
        repl.close()  # the temporary slot goes with its connection
        client.close()

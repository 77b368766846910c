"""`connector resync`: rebuild chosen tables from a fresh consistent snapshot.

A temporary wal2json slot exports a snapshot at its consistent point C; the tables are copied as
of C (flow.copy) as new row versions, and each table gets a truncate floor at C: once readers
are at C they see the copy, and rows Redis held from before that the copy did not rewrite are
hidden (garbage collection removes them); the stream's older changes for them are skipped.
Versions only ever add, so this runs safely next to a streaming connector.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from connector.config import Settings
from connector.core.lsn import Lsn
from connector.embed.base import Embedder
from connector.errors import ConfigError
from connector.flow.applier import Applier
from connector.flow.copy import copy_at_new_snapshot
from connector.flow.targets import prepare, targets
from connector.sink.checkpoint import read_checkpoint
from connector.sink.redis_client import client_for
from connector.source.catalog import inspect_table
from connector.source.connection import connect
from connector.source.slots import slot_info

log = logging.getLogger(__name__)

_WAIT_VISIBLE_S = 60.0


@dataclass(frozen=True, slots=True)
class ResyncReport:
    at: Lsn
    rows: int
    embedded: int


def _make_visible(settings: Settings, applier: Applier, at: Lsn, everything: bool) -> None:
    """The copy is staged at `at`: readers see it once the visible LSN passes `at`. A running
    connector gets there within moments (wait for it); with none running, a copy of every
    table is itself consistent at `at`, so the visible LSN moves there now."""
    slot = settings.postgres.slot
    with connect(settings.postgres, "resync") as conn:
        info = slot_info(conn, slot)
    writer = applier.writer
    if info is not None and info.active:
        deadline = time.monotonic() + _WAIT_VISIBLE_S
        while writer.visible() < at and time.monotonic() < deadline:
            time.sleep(0.05)
        if writer.visible() < at:
            log.warning("the connector streaming slot %s has not reached %s yet: the copy "
                        "becomes visible when it does", slot, at)  # fmt: skip
    elif everything and read_checkpoint(applier.client, slot) is not None:
        writer.set_visible(at)
    else:
        log.warning("no connector is streaming slot %s: the copy becomes visible when "
                    "`connector run` streams past %s", slot, at)  # fmt: skip


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
    with connect(settings.postgres, "resync") as conn:
        tables = [inspect_table(conn, t) for t in settings.tables if t.qualified_name in chosen]
    client = client_for(settings.redis)
    try:
        layouts = prepare(client, settings, embedder, auto=False)  # as the daemon would start
        found = targets(layouts, settings, embedder, client, rebuilds=False)
        applier = Applier(client, settings, embedder, targets=found)
        at, rows = copy_at_new_snapshot(settings, applier, tables, "resync")
        _make_visible(settings, applier, at, everything=len(chosen) == len(settings.tables))
        log.info("resync done: %d rows copied, %d chunks embedded", rows,
                 applier.stats.chunks_embedded)  # fmt: skip
        return ResyncReport(at, rows, applier.stats.chunks_embedded)
    finally:
        client.close()

"""Operator commands on the slot and the checkpoint: replay, slot drop, verify (and repair)."""

from __future__ import annotations

import logging
import time

import psycopg

from connector.catalog import inspect_table
from connector.chunking import Chunker, get_encoding
from connector.config import Settings
from connector.embeddings.base import Embedder
from connector.errors import ReplicationError, SlotLostError
from connector.index import index_specs, read_checkpoint
from connector.keys import checkpoint_key
from connector.lsn import Lsn
from connector.redis_client import client_for
from connector.replication import conninfo, slot_info
from connector.resync import resync, select_tables
from connector.snapshot import open_snapshot
from connector.verify import Drift, compare_table

log = logging.getLogger(__name__)


def _slot_idle_or_fail(conn: psycopg.Connection[tuple[object, ...]], settings: Settings) -> Lsn:
    """The slot's confirmed position; it must exist and no connector may be streaming it."""
    info = slot_info(conn, settings.postgres.slot)
    deadline = time.monotonic() + 5  # a connector that just stopped lets go within moments
    while info is not None and info.active and time.monotonic() < deadline:
        time.sleep(0.1)
        info = slot_info(conn, settings.postgres.slot)
    if info is None:
        raise SlotLostError(
            f"slot {settings.postgres.slot} does not exist, so it holds no changes to replay: "
            "run `connector resync` (or `connector run`, which copies the tables again)"
        )
    if info.active:
        raise ReplicationError(
            f"slot {settings.postgres.slot} is in use by a running connector: stop it first "
            "(SIGTERM), then replay, then start it again"
        )
    if info.wal_status == "lost" or info.confirmed_flush_lsn is None:
        raise SlotLostError(
            f"slot {settings.postgres.slot} was invalidated (wal_status {info.wal_status}): "
            "run `connector resync`"
        )
    return info.confirmed_flush_lsn


def rewind(settings: Settings, lsn: Lsn) -> Lsn:
    """Move the checkpoint back to `lsn`, so the next start re-applies every change after it.

    Only possible while the slot still holds those changes: `lsn` must not be older than the
    slot's confirmed position (keep a `pipeline.replay_window_s` to leave room)."""
    with psycopg.connect(conninfo(settings.postgres), autocommit=True) as conn:
        confirmed = _slot_idle_or_fail(conn, settings)
    if lsn < confirmed:
        raise SlotLostError(
            f"slot {settings.postgres.slot} no longer holds changes before {confirmed}, so it "
            f"cannot replay from {lsn}: run `connector resync` to rebuild from a snapshot "
            "(set pipeline.replay_window_s to keep a window for replays)"
        )
    client = client_for(settings.redis)
    try:
        previous = read_checkpoint(client, settings.postgres.slot)
        client.hset(checkpoint_key(settings.postgres.slot), "lsn", str(lsn))
    finally:
        client.close()
    was = previous.lsn if previous else None
    log.info("checkpoint moved from %s to %s: the next start replays from there", was, lsn)
    return confirmed


def drop_slot(settings: Settings, force: bool = False) -> bool:
    """Drop the slot (decommission) and forget the checkpoint; True when a slot was dropped."""
    slot = settings.postgres.slot
    with psycopg.connect(conninfo(settings.postgres), autocommit=True) as conn:
        info = slot_info(conn, slot)
        if info is None:
            return False
        if info.active and not force:
            raise ReplicationError(
                f"slot {slot} is in use by a running connector: stop it first, or pass --force"
            )
        conn.execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
            "WHERE slot_name = %s AND active_pid IS NOT NULL",
            [slot],
        )
        conn.execute("SELECT pg_drop_replication_slot(%s)", [slot])
    client = client_for(settings.redis)
    try:
        client.delete(checkpoint_key(slot))
    finally:
        client.close()
    return True


def verify(settings: Settings, only: list[str] | None = None) -> list[Drift]:
    """Compare each chosen table with its index (in one snapshot of the database)."""
    chosen = select_tables(settings, only)
    client = client_for(settings.redis)
    encoding = get_encoding(settings.embedding.model)
    drifts = []
    try:
        with open_snapshot(conninfo(settings.postgres), None) as conn:
            for table in settings.tables:
                if table.qualified_name not in chosen:
                    continue
                info = inspect_table(conn, table)
                chunker = Chunker(encoding, table.chunk_tokens, table.chunk_overlap)
                drifts.append(compare_table(conn, client, info, chunker))
            conn.rollback()
    finally:
        client.close()
    return drifts


def checkpoint_problem(settings: Settings) -> str | None:
    """Why the index has no checkpoint it should have (eviction, FLUSHALL), or None."""
    client = client_for(settings.redis)
    try:
        if read_checkpoint(client, settings.postgres.slot) is not None:
            return None
        rows = any(
            next(client.scan_iter(match=f"{spec.keys.row_prefix}*", count=1000), None)
            for spec in index_specs(settings.tables).values()
        )
    finally:
        client.close()
    if not rows:
        return None  # nothing built yet: the first `connector run` builds it
    return (
        f"Redis holds no checkpoint for slot {settings.postgres.slot} though the index has rows: "
        "it was lost (eviction, FLUSHALL, restart without persistence). `connector run` "
        "resynchronises the tables from a snapshot and writes it again"
    )


def repair(settings: Settings, embedder: Embedder, drifts: list[Drift]) -> None:
    """Fix drift: delete stray chunk keys, then rebuild the drifted tables from a snapshot (rows
    whose text is unchanged keep their vectors; rows the table no longer has are swept)."""
    client = client_for(settings.redis)
    try:
        specs = index_specs(settings.tables)
        for drift in drifts:
            prefix = specs[settings.table(drift.table).index_name].keys.chunk_prefix
            strays = [key for key in drift.orphaned if key.startswith(prefix)]
            if strays:
                client.delete(*strays)
    finally:
        client.close()
    tables = [d.table for d in drifts if not d.clean]
    if tables:
        resync(settings, embedder, tables)

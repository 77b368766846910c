"""Where an attempt of the daemon starts streaming.

- From the checkpoint in Redis, when the slot and the checkpoint agree (`resync_reason`);
- from a fresh slot after a consistent copy of the tables (the first start, a slot or a Redis
  lost: `resync_reason` says why);
- nowhere, when the indexes describe another history than the source's (a restore, a failover
  that lost commits: core.history, `other_source_history`): every index of the slot is rebuilt
  behind its alias from a fresh snapshot and switched with the new history's checkpoint in one
  step; the next attempt starts on them.
"""

from __future__ import annotations

import logging

import redis

from connector.config import Settings
from connector.core.history import Recorded, Source, other_history, parse_timeline_history
from connector.core.lsn import Lsn
from connector.core.tables import TableInfo
from connector.embed.base import Embedder
from connector.errors import ConfigError
from connector.flow.applier import Applier
from connector.flow.copy import CopyOptions, copy_tables
from connector.flow.partitions import Partitions
from connector.flow.rebuild import bound_tables, progress_of, rebuild_every_index
from connector.flow.state import DaemonState
from connector.flow.targets import Target, close_extra, targets
from connector.sink.checkpoint import (
    Checkpoint,
    mark_replaced,
    new_history_commands,
    read_checkpoint,
    record_source,
)
from connector.sink.layout import Owner, switch_together
from connector.source.connection import connect, conninfo, open_snapshot
from connector.source.replication import ReplicationConnection
from connector.source.slots import SlotInfo, drop_slot, release_stale_slot, slot_info

log = logging.getLogger(__name__)


class Start:
    """The start of one attempt, on its replication connection and applier. `position()` is
    where to stream from; the checkpoint it starts at is written to `state.checkpoint`."""

    def __init__(
        self,
        settings: Settings,
        embedder: Embedder,
        state: DaemonState,
        repl: ReplicationConnection,
        applier: Applier,
        tables: dict[str, TableInfo],
        partitions: Partitions,
    ) -> None:
        self.settings = settings
        self.embedder = embedder
        self.state = state
        self.repl = repl
        self.applier = applier
        self.client: redis.Redis = applier.client
        self.tables = tables
        self.partitions = partitions
        self.slot = settings.postgres.slot

    def position(self) -> Lsn | None:
        """Where to stream from: the checkpoint, or a fresh slot after a consistent copy. None
        when the indexes were rebuilt for another history of the source (the caller starts
        again on them)."""
        slot = self.slot
        with connect(self.settings.postgres, "slot") as conn:
            info = slot_info(conn, slot)
            if info is not None and info.active:
                release_stale_slot(conn, slot, self.settings.postgres.stream_timeout_s)
                info = slot_info(conn, slot)
        checkpoint = read_checkpoint(self.client, slot)
        source = Source(*self.repl.identify_system())
        change = other_source_history(self.repl, checkpoint, source, info)
        if change is not None:
            self._replace_history(info, source, change)
            return None
        reason = resync_reason(info, checkpoint, self.applier.system_id)
        if reason is None and checkpoint is not None:
            if checkpoint.timeline != source.timeline:  # a failover that kept every commit
                record_source(self.client, slot, source.timeline)
            self.state.checkpoint = checkpoint.lsn
            self.applier.resume()
            log.info("resuming slot %s from checkpoint %s", slot, checkpoint.lsn)
            return checkpoint.lsn
        if info is not None:
            log.warning("dropping slot %s: %s", slot, reason)
            with connect(self.settings.postgres, "slot") as conn:
                drop_slot(conn, slot)
        elif checkpoint is not None:
            log.warning("resynchronising: %s", reason)
        return self._initial_copy(source.timeline)

    def _initial_copy(self, timeline: int) -> Lsn:
        applier = self.applier
        consistent, snapshot = self.repl.create_slot(export_snapshot=True)
        # Before the first flip: the history the checkpoint follows (core.history).
        record_source(self.client, self.slot, timeline, consistent)
        applier.read_visible()
        with open_snapshot(conninfo(self.settings.postgres), snapshot) as conn:
            batch = self.settings.pipeline.batch_max_rows
            tables = self.tables.values()
            copy_tables(conn, applier, tables, consistent, batch, CopyOptions(self.state.stop))
            conn.rollback()
        for table in self.tables:  # rows Redis held from before, that the copy did not rewrite
            applier.raise_floor(table, consistent)
        self.partitions.record_copied(self.client)
        applier.flip(consistent)
        self.state.checkpoint = consistent
        return consistent

    # ----------------------------------------------------------------- another history

    def _replace_history(self, info: SlotInfo | None, source: Source, change: str) -> None:
        """The indexes describe another history than the source's (core.history): rebuild
        every index of the slot behind its alias from a fresh snapshot, then switch them all,
        with the new history's checkpoint, in one step. Until then readers answer from the old
        indexes at the old visible LSN; the new history's visible LSN starts at the switch."""
        slot, client = self.slot, self.client
        log.error(
            "slot %s: the index describes another history than the source's: %s. Rebuilding "
            "every index of the slot from a fresh snapshot of the source (system id %s, "
            "timeline %d, WAL at %s) behind its alias: searches answer from the old index until "
            "the switch, and a search waiting for an LSN waits for the new one",
            slot, change, source.system_id, source.timeline, source.wal,
        )  # fmt: skip
        mark_replaced(client, slot, change)
        if info is not None:  # its position is not in the index's history: a new one
            with connect(self.settings.postgres, "history") as conn:
                drop_slot(conn, slot)
        owner = Owner(slot, source.system_id)
        layouts = rebuild_every_index(
            client, self.settings, self.embedder, owner, "the source has another history"
        )
        found = targets(layouts, self.settings, self.embedder, client)
        try:
            building = [t for t in found if t.rebuild]
            consistent = self._copy_history(building, source.system_id)
        finally:
            close_extra(found, self.embedder)
        records = [layout.record for layout in layouts.values()]
        begun = new_history_commands(slot, consistent, source.system_id, source.timeline)
        switch_together(client, records, *begun)
        self.state.checkpoint = consistent
        log.info("slot %s: the indexes follow the source's history from %s", slot, consistent)

    def _copy_history(self, building: list[Target], system_id: str) -> Lsn:
        """Copy the tables into the rebuilt indexes from the snapshot of a new slot, staged
        only: nothing is visible before the switch. Returns the slot's consistent point."""
        client = self.client
        consistent, snapshot = self.repl.create_slot(export_snapshot=True)
        with open_snapshot(conninfo(self.settings.postgres), snapshot) as conn:
            batch = self.settings.pipeline.batch_max_rows
            for target in building:  # one index each, its progress in its record (status)
                alias = next(iter(target.specs))
                applier = Applier(client, self.settings, target.embedder, system_id, None,
                                  targets=[target])  # fmt: skip
                infos = bound_tables(self.tables, target)
                report = progress_of(client, alias)
                copying = CopyOptions(self.state.stop, report)
                copy_tables(conn, applier, infos, consistent, batch, copying)
            conn.rollback()
        self.partitions.record_copied(client)
        return consistent


def other_source_history(
    repl: ReplicationConnection,
    checkpoint: Checkpoint | None,
    source: Source,
    info: SlotInfo | None,
) -> str | None:
    """Why the index describes another history than the source's (None: the same one, or
    nothing to compare with). The timeline's history is asked for only when it changed."""
    if checkpoint is None:
        return None
    if checkpoint.replaced:  # a restart during that rebuild: it starts again
        return f"{checkpoint.replaced} (the rebuild for it did not finish)"
    recorded = Recorded(
        checkpoint.system_id, checkpoint.timeline, checkpoint.position, checkpoint.slot_lsn
    )
    ancestors = None
    if checkpoint.timeline is not None and source.timeline > checkpoint.timeline:
        content = repl.timeline_history(source.timeline)
        ancestors = parse_timeline_history(content) if content is not None else None
    position = info.confirmed_flush_lsn if info is not None else None
    return other_history(recorded, source, position, ancestors)


def resync_reason(
    info: SlotInfo | None, checkpoint: Checkpoint | None, system_id: str
) -> str | None:
    """Why the checkpoint and the slot cannot be reconciled, or None when they can."""
    if info is None:
        if checkpoint is None:
            return "first start: no slot and no checkpoint"
        return f"slot is gone (dropped?) though Redis holds checkpoint {checkpoint.lsn}"
    if info.plugin != "wal2json":
        raise ConfigError(
            f"slot {info.name} exists with plugin {info.plugin}, not wal2json: choose another "
            "postgres.slot, or drop that slot"
        )
    if checkpoint is None:
        return "Redis holds no checkpoint for this slot (new or emptied Redis)"
    if info.wal_status == "lost":
        return "the slot was invalidated (wal_status = lost)"
    if checkpoint.system_id and system_id and checkpoint.system_id != system_id:
        return "the checkpoint belongs to another database cluster"
    if info.confirmed_flush_lsn and info.confirmed_flush_lsn > checkpoint.lsn:
        return (
            f"Redis checkpoint {checkpoint.lsn} is behind the slot's confirmed position "
            f"{info.confirmed_flush_lsn}: Redis lost writes the slot no longer holds"
        )
    return None

"""The daemon: stream -> transactions -> batches -> plan (chunk, embed) -> stage -> flip -> confirm.

Five threads, each owning its connection:

- the reader (flow.reader) owns the replication connection and fills a bounded queue
  (flow.queue) with whole transactions, and with bounded pieces of large ones;
- the applier (the caller's thread, here) takes whole transactions in batches bounded by rows
  and by a short time window, skips those at or below the checkpoint, and plans each batch
  (flow.applier: decode, chunk, embed), in slices of at most `pipeline.batch_max_rows` rows;
- the stager (flow.stager) stages each planned slice in Redis while the next one is planned,
  flips the visible LSN at the end of each batch (one single-key write), and collects garbage;
- the durability thread (flow.durability) waits until Redis has the write on disk (WAITAOF) and
  only then lets the reader confirm that LSN to Postgres;
- the monitor (flow.monitor) checks the slot's lag and retained WAL and sends heartbeats.

Any connection failure tears them down and starts again from the checkpoint in Redis: what
was in flight is read again from the slot, and what Redis already holds is skipped.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import psycopg
import redis

from connector.config import Settings
from connector.core.changes import Transaction
from connector.core.history import Recorded, Source, other_history, parse_timeline_history
from connector.core.keys import durable_key
from connector.core.lsn import Lsn
from connector.core.rows import BatchEffects, collect, split
from connector.core.tables import TableInfo, routes
from connector.embed.base import Embedder
from connector.errors import (
    ConfigError,
    EmbeddingUnavailable,
    RedisFull,
    ReplicationError,
    ResyncNeeded,
)
from connector.flow.applier import Applier, Plan
from connector.flow.copy import copy_tables
from connector.flow.durability import Durability
from connector.flow.health import TableHealth
from connector.flow.monitor import DaemonSample, Monitor
from connector.flow.partitions import Partitions, check_overlaps
from connector.flow.queue import ChangeQueue, Idle, Item
from connector.flow.reader import Reader
from connector.flow.rebuild import Rebuilds, bound_tables, progress_of, rebuild_every_index
from connector.flow.stager import Stager
from connector.flow.targets import Target, close_extra, prepare, targets
from connector.logs import redact
from connector.metrics import Metrics
from connector.sink.checkpoint import (
    Checkpoint,
    mark_replaced,
    new_history_commands,
    read_checkpoint,
    record_source,
)
from connector.sink.layout import Owner, switch_together
from connector.sink.memory import WritePause, check_eviction_policy
from connector.sink.redis_client import aof_enabled, client_for
from connector.sink.writer import ApplyStats
from connector.source.catalog import inspect_table
from connector.source.replication import ReplicationConnection, conninfo
from connector.source.reselect import Reselector
from connector.source.server import current_wal_lsn, server_codec, system_identifier
from connector.source.slots import SlotInfo, drop_slot, release_stale_slot, slot_info
from connector.source.snapshot import open_snapshot

log = logging.getLogger(__name__)
T = TypeVar("T")

# Wall time per garbage collection step, between batches and when the stream is idle.
_GC_BUSY_S = 0.002
_GC_IDLE_S = 0.02
# How often the daemon looks at its indexes' records: a rebuild to switch, or one asked for.
_LAYOUT_POLL_S = 0.25
# How often it looks for partitions new to it (partitioned tables only).
_PARTITION_POLL_S = 2.0

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    ReplicationError,
    EmbeddingUnavailable,
    ResyncNeeded,
    RedisFull,
    redis.OutOfMemoryError,
    psycopg.OperationalError,
    psycopg.errors.IdleInTransactionSessionTimeout,  # the server ended the session: reconnect
    redis.ConnectionError,
    redis.TimeoutError,
    OSError,
)


class Connector:
    """Follows the slot and keeps the Redis index equal to the configured tables."""

    def __init__(
        self, settings: Settings, embedder: Embedder, metrics: Metrics | None = None
    ) -> None:
        if not settings.tables:
            raise ConfigError("no tables configured: add a [[tables]] section")
        self.settings = settings
        self.embedder = embedder
        self.metrics = metrics
        self.stop_event = threading.Event()
        self.checkpoint = Lsn(0)
        self.ready = threading.Event()
        self._catch_up_to = Lsn(0)
        self._lag_bytes: int | None = None  # set by the monitor at each check
        self.applier: Applier | None = None
        self.redis_pause = WritePause(metrics.set_redis_oom if metrics is not None else None)
        # Tables whose changes are being dead-lettered: said once per episode, across attempts.
        self.health = TableHealth(settings.postgres.slot, metrics)
        # Rows per batch: the setting, halved after a batch write timed out (and grown back).
        self._batch_rows = settings.pipeline.batch_max_rows
        self._streamed = False  # this attempt reached streaming (resets the backoff)
        self._queue: ChangeQueue | None = None
        # Oldest commit time of the batch being planned, and of the slice being staged.
        self._planning_commit: float | None = None
        self._staging_commit: float | None = None
        self._rebuilds: Rebuilds | None = None
        self._reconciled = False
        self._encoding = "utf-8"  # the database's, read at each start (server_codec)
        self._partitions: Partitions | None = None

    def stop(self) -> None:
        self.stop_event.set()

    # ----------------------------------------------------------------- the outer loop

    def run(self) -> None:
        """Run until `stop()`; transient failures are retried with backoff, forever."""
        delay = 0.5
        while not self.stop_event.is_set():
            self._streamed = False
            try:
                self._run_once()
            except TRANSIENT_ERRORS as exc:
                self.ready.clear()
                if self.stop_event.is_set():
                    break
                if self._streamed:  # it was streaming again: this is a new outage
                    delay = 0.5
                if self.metrics is not None:
                    self.metrics.restarted(type(exc).__name__)
                paused = self.redis_pause.full
                if isinstance(exc, redis.OutOfMemoryError):  # at start: ensure_indexes
                    with client_for(self.settings.redis) as client:
                        self.redis_pause.refused(client)
                # The pause's one ERROR said it: a write refused again is no news.
                quiet = paused and isinstance(exc, redis.OutOfMemoryError | RedisFull)
                log.log(
                    logging.INFO if quiet else logging.WARNING,
                    "%s; reconnecting in %.1fs from checkpoint %s",
                    redact(str(exc)),
                    delay,
                    self.checkpoint,
                    extra={"lsn": str(self.checkpoint)},
                )
                self.stop_event.wait(delay)
                delay = min(delay * 2, 30.0)
        log.info("stopped at checkpoint %s", self.checkpoint)

    def _run_once(self) -> None:
        client = client_for(self.settings.redis)
        repl = ReplicationConnection(self.settings.postgres)
        reselector = Reselector(conninfo(self.settings.postgres))
        rebuilds: Rebuilds | None = None
        partitions: Partitions | None = None
        found: list[Target] = []
        try:
            client.ping()
            check_eviction_policy(client, self.settings.redis.allow_eviction)
            tables, system_id = self._inspect()
            partitions = self._partitions = Partitions(self.settings, tables)
            # The settings are held against the indexes once, at the first start; after that
            # (a switch, a rebuild `connector reindex` asked for) Redis's layouts are followed.
            layouts = prepare(
                client, self.settings, self.embedder, self.settings.reindex.auto,
                reconcile=not self._reconciled, system_id=system_id,
            )  # fmt: skip
            self._reconciled = True
            found = targets(layouts, self.settings, self.embedder, client)
            applier = Applier(
                client, self.settings, self.embedder, system_id, reselector,
                collect_garbage=True, targets=found, health=self.health,
            )  # fmt: skip
            self.redis_pause.recheck(client)  # one episode across attempts: one ERROR
            self.applier = applier
            rebuilds = Rebuilds(self.settings, layouts, found)
            repl.connect()
            start = self._prepare(repl, client, applier, tables)
            if start is None:  # rebuilt for another history of the source: start again on it
                return
            self._stream(repl, client, applier, tables, start, rebuilds)
        finally:
            if rebuilds is not None:
                rebuilds.close()
            if partitions is not None:
                partitions.close()
            close_extra(found, self.embedder)
            reselector.close()
            repl.close()
            client.close()

    def _inspect(self) -> tuple[dict[str, TableInfo], str]:
        with psycopg.connect(conninfo(self.settings.postgres), autocommit=True) as conn:
            self._encoding = server_codec(conn)  # before reading any text
            tables = {t.qualified_name: inspect_table(conn, t) for t in self.settings.tables}
            system_id = system_identifier(conn)
        check_overlaps(tables)
        for table in tables.values():
            if len(table.settings.content) > 1 and not table.full_identity:
                log.info(
                    "table %s: REPLICA IDENTITY is not FULL, so an UPDATE that leaves a large "
                    "(TOASTed) content column unchanged does not carry its text; the connector "
                    "reads such columns back from the table by key",
                    table.name,
                    extra={"table": table.name},
                )
        return tables, system_id

    # ----------------------------------------------------------------- start position

    def _prepare(
        self,
        repl: ReplicationConnection,
        client: redis.Redis,
        applier: Applier,
        tables: dict[str, TableInfo],
    ) -> Lsn | None:
        """Where to stream from: the checkpoint, or a fresh slot after a consistent copy. None
        when the indexes were rebuilt for another history of the source (the caller starts
        again on them)."""
        slot = self.settings.postgres.slot
        with psycopg.connect(conninfo(self.settings.postgres), autocommit=True) as conn:
            info = slot_info(conn, slot)
            if info is not None and info.active:
                release_stale_slot(conn, slot, self.settings.postgres.stream_timeout_s)
                info = slot_info(conn, slot)
        checkpoint = read_checkpoint(client, slot)
        source = Source(*repl.identify_system())
        change = other_source_history(repl, checkpoint, source, info)
        if change is not None:
            self._replace_history(repl, client, tables, info, source, change)
            return None
        reason = resync_reason(info, checkpoint, applier.system_id)
        if reason is None and checkpoint is not None:
            if checkpoint.timeline != source.timeline:  # a failover that kept every commit
                record_source(client, slot, source.timeline)
            self.checkpoint = checkpoint.lsn
            applier.resume()
            log.info("resuming slot %s from checkpoint %s", slot, checkpoint.lsn)
            return checkpoint.lsn
        if info is not None:
            log.warning("dropping slot %s: %s", slot, reason)
            with psycopg.connect(conninfo(self.settings.postgres), autocommit=True) as conn:
                drop_slot(conn, slot)
        elif checkpoint is not None:
            log.warning("resynchronising: %s", reason)
        return self._initial_copy(repl, applier, tables, source.timeline)

    def _initial_copy(
        self,
        repl: ReplicationConnection,
        applier: Applier,
        tables: dict[str, TableInfo],
        timeline: int,
    ) -> Lsn:
        consistent, snapshot = repl.create_slot(export_snapshot=True)
        # Before the first flip: the history the checkpoint follows (core.history).
        record_source(applier.client, self.settings.postgres.slot, timeline, consistent)
        applier.read_visible()
        with open_snapshot(conninfo(self.settings.postgres), snapshot) as conn:
            batch = self.settings.pipeline.batch_max_rows
            copy_tables(conn, applier, tables.values(), consistent, batch, self.stop_event)
            conn.rollback()
        for table in tables:  # rows Redis held from before, that the copy did not rewrite
            applier.raise_floor(table, consistent)
        if self._partitions is not None:
            self._partitions.record_copied(applier.client)
        applier.flip(consistent)
        self.checkpoint = consistent
        return consistent

    # ----------------------------------------------------------------- another history

    def _replace_history(
        self,
        repl: ReplicationConnection,
        client: redis.Redis,
        tables: dict[str, TableInfo],
        info: SlotInfo | None,
        source: Source,
        change: str,
    ) -> None:
        """The indexes describe another history than the source's (core.history): rebuild
        every index of the slot behind its alias from a fresh snapshot, then switch them all,
        with the new history's checkpoint, in one step. Until then readers answer from the old
        indexes at the old visible LSN; the new history's visible LSN starts at the switch."""
        slot = self.settings.postgres.slot
        log.error(
            "slot %s: the index describes another history than the source's: %s. Rebuilding "
            "every index of the slot from a fresh snapshot of the source (system id %s, "
            "timeline %d, WAL at %s) behind its alias: searches answer from the old index until "
            "the switch, and a search waiting for an LSN waits for the new one",
            slot, change, source.system_id, source.timeline, source.wal,
        )  # fmt: skip
        mark_replaced(client, slot, change)
        if info is not None:  # its position is not in the index's history: a new one
            with psycopg.connect(conninfo(self.settings.postgres), autocommit=True) as conn:
                drop_slot(conn, slot)
        owner = Owner(slot, source.system_id)
        layouts = rebuild_every_index(
            client, self.settings, self.embedder, owner, "the source has another history"
        )
        found = targets(layouts, self.settings, self.embedder, client)
        try:
            building = [t for t in found if t.rebuild]
            consistent = self._copy_history(repl, client, tables, building, source.system_id)
        finally:
            close_extra(found, self.embedder)
        records = [layout.record for layout in layouts.values()]
        begun = new_history_commands(slot, consistent, source.system_id, source.timeline)
        switch_together(client, records, *begun)
        self.checkpoint = consistent
        log.info("slot %s: the indexes follow the source's history from %s", slot, consistent)

    def _copy_history(
        self,
        repl: ReplicationConnection,
        client: redis.Redis,
        tables: dict[str, TableInfo],
        building: list[Target],
        system_id: str,
    ) -> Lsn:
        """Copy the tables into the rebuilt indexes from the snapshot of a new slot, staged
        only: nothing is visible before the switch. Returns the slot's consistent point."""
        consistent, snapshot = repl.create_slot(export_snapshot=True)
        with open_snapshot(conninfo(self.settings.postgres), snapshot) as conn:
            batch = self.settings.pipeline.batch_max_rows
            for target in building:  # one index each, its progress in its record (status)
                alias = next(iter(target.specs))
                applier = Applier(client, self.settings, target.embedder, system_id, None,
                                  targets=[target])  # fmt: skip
                infos = bound_tables(tables, target)
                report = progress_of(client, alias)
                copy_tables(conn, applier, infos, consistent, batch, self.stop_event, report)
            conn.rollback()
        if self._partitions is not None:
            self._partitions.record_copied(client)
        return consistent

    # ----------------------------------------------------------------- streaming

    def _stream(
        self,
        repl: ReplicationConnection,
        client: redis.Redis,
        applier: Applier,
        tables: dict[str, TableInfo],
        start: Lsn,
        rebuilds: Rebuilds,
    ) -> None:
        stop = threading.Event()
        pipeline = self.settings.pipeline
        queue = ChangeQueue(pipeline.queue_max_changes, pipeline.queue_max_bytes)
        partitions = self._partitions
        assert partitions is not None
        repl.start(start, partitions.filter())
        durable_client = client_for(self.settings.redis)
        durability = Durability(
            durable_client,
            self.settings.redis.wait_aof and aof_enabled(client),
            self.settings.redis.wait_aof_timeout_ms,
            stop,
            pipeline.replay_window_s,
            pipeline.replay_window_bytes,
            durable_key(self.settings.postgres.slot),
        )
        reader = Reader(
            repl, queue, stop, durability.confirmable, pipeline.transaction_piece_rows,
            self._encoding, pipeline.transaction_piece_bytes, kept_columns(tables),
        )  # fmt: skip
        monitor = Monitor(
            self.settings, client, self.embedder, self.metrics,
            lambda: self._sample(applier),
            self._set_lag,
        )  # fmt: skip
        self._queue = queue
        durability.applied(start)
        durability.start()
        reader.start()
        monitor.start()
        self._catch_up_to = self._server_wal_lsn()
        self._streamed = True
        self.ready.set()
        rebuilds.start(tables)  # after the stream started: their snapshots follow its position
        self._rebuilds = rebuilds
        try:
            self._apply_loop(queue, applier, tables, durability, reader, monitor, stop, rebuilds)
        finally:
            self.ready.clear()
            stop.set()
            reader.join(5)
            durability.join(5)
            durable_client.close()
            monitor.close()
        for failed in (reader.error, durability.error):
            if failed is not None:
                raise failed

    def _sample(self, applier: Applier) -> DaemonSample:
        collector = applier.collector
        return DaemonSample(
            self.checkpoint,
            applier.stats,
            self._oldest_pending(),
            collector.stats if collector is not None else None,
            collector.backlog if collector is not None else 0,
        )

    def _server_wal_lsn(self) -> Lsn:
        with psycopg.connect(conninfo(self.settings.postgres), autocommit=True) as conn:
            return current_wal_lsn(conn)

    def _oldest_pending(self) -> float | None:
        """Commit time of the oldest transaction received but not yet applied."""
        queued = self._queue.oldest_commit_time() if self._queue is not None else None
        in_hand = (self._staging_commit, self._planning_commit, queued)
        times = [t for t in in_hand if t is not None]
        return min(times, default=None)

    def _set_lag(self, lag_bytes: int) -> None:
        self._lag_bytes = lag_bytes

    def is_ready(self) -> bool:
        """Streaming, caught up with what the server had at start, not far behind now, and
        Redis accepting writes."""
        if not self.ready.is_set() or self.checkpoint < self._catch_up_to:
            return False
        if self.redis_pause.full:
            return False
        lag = self._lag_bytes
        return lag is None or lag <= self.settings.observability.ready_max_lag_bytes

    def _apply_loop(
        self,
        queue: ChangeQueue,
        applier: Applier,
        tables: dict[str, TableInfo],
        durability: Durability,
        reader: Reader,
        monitor: Monitor,
        stop: threading.Event,
        rebuilds: Rebuilds,
    ) -> None:
        pipeline = self.settings.pipeline
        stager = Stager()
        next_poll = time.monotonic() + _LAYOUT_POLL_S
        partitions = self._partitions
        assert partitions is not None
        next_partitions = 0.0  # at once: partitions new since the last start are copied
        try:
            while not stop.is_set() and not self.stop_event.is_set():
                batch = queue.take(self._batch_rows, pipeline.batch_max_wait_ms / 1000, 0.25)
                self._planning_commit = _oldest_commit(batch)
                if batch and self._apply(batch, applier, tables, durability, stager, stop):
                    monitor.activity()
                self._planning_commit = None
                if not batch and not stager.busy:  # idle: a longer step of garbage collection
                    stager.submit((), lambda: self._collect(applier, _GC_IDLE_S))
                if time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + _LAYOUT_POLL_S
                    if rebuilds.poll(applier.client, applier.visible):
                        break  # a switch, or a rebuild asked for: start again with the layouts
                if partitions.partitioned and time.monotonic() >= next_partitions:
                    next_partitions = time.monotonic() + _PARTITION_POLL_S
                    partitions.poll(applier.client, rebuilds.targets)
            stager.drain()
        finally:
            stager.close()
        if self.stop_event.is_set() and reader.error is None:
            self._shut_down(durability, reader)

    def _collect(self, applier: Applier, budget_s: float, at_least: int = 0) -> None:
        """A step of garbage collection (in the stager's thread: it writes to Redis too)."""
        if self._rebuilds is not None:
            self._rebuilds.retire(applier.client)
        collector = applier.collector
        if collector is None:
            return
        before = (collector.stats.versions_removed, collector.stats.chunks_removed)
        applier.collect(budget_s, at_least)
        if self.metrics is not None:
            versions = collector.stats.versions_removed - before[0]
            chunks = collector.stats.chunks_removed - before[1]
            self.metrics.collected(collector.backlog, versions, chunks)

    def _shut_down(self, durability: Durability, reader: Reader) -> None:
        """Confirm what Redis holds durably, then close the stream (SIGTERM / SIGINT)."""
        deadline = self.settings.pipeline.shutdown_timeout_s
        if not durability.drain(deadline / 2):
            log.warning("Redis did not confirm the last write within %.1fs", deadline / 2)
        reader.stop.set()
        reader.join(deadline / 2)
        with contextlib.suppress(Exception):
            reader.repl.confirm(durability.confirmable())
            reader.repl.send_status(force=True)

    def _apply(
        self,
        batch: list[Item],
        applier: Applier,
        tables: dict[str, TableInfo],
        durability: Durability,
        stager: Stager,
        stop: threading.Event,
    ) -> bool:
        """Plan one batch here, in slices, each staged by `stager` while the next is planned;
        the last one flips. True when the batch held row changes. While Redis is at maxmemory
        the staging waits (the reader keeps the stream alive; nothing is confirmed)."""
        started = time.monotonic()
        txns = [i for i in batch if isinstance(i, Transaction) and i.commit_lsn > self.checkpoint]
        idle = max((i.wal_end for i in batch if isinstance(i, Idle)), default=Lsn(0))
        if txns:
            assert self._partitions is not None
            effects = collect(txns, self._partitions.routes_for(txns))
            # A piece of a large transaction is staged, not flipped: its end flips.
            target = None if txns[-1].partial else max(effects.last_lsn, idle)
            last_commit = txns[-1].commit_time
            commit_time = last_commit.timestamp() if last_commit else None
        elif idle > self.checkpoint:
            effects, target, commit_time = BatchEffects(), idle, None
        else:
            return False
        changed = bool(
            effects.rows or effects.truncated or effects.truncated_leaves or effects.skipped
        )
        slices = split(effects, self.settings.pipeline.batch_max_rows)
        applied = _Applied.of(txns)  # what metrics need: the transactions are let go now
        for n, piece in enumerate(slices):
            last = n == len(slices) - 1
            stager.settle(piece.rows)
            plan = applier.plan(piece) if changed else None
            job = functools.partial(
                self._stage, plan, target if last else None, commit_time, applier, durability,
                stop, applied if last else None, started, self._planning_commit,
            )  # fmt: skip
            stager.submit(frozenset(piece.rows), job)
        return changed

    def _stage(
        self,
        plan: Plan | None,
        target: Lsn | None,
        commit_time: float | None,
        applier: Applier,
        durability: Durability,
        stop: threading.Event,
        applied: _Applied | None,
        started: float,
        oldest_commit: float | None,
    ) -> None:
        """The stager's job: stage a planned slice, flip when it ends the batch, confirm."""
        self._staging_commit = oldest_commit
        try:
            if plan is not None:
                stats = self._write(lambda: applier.stage(plan, target, commit_time), applier, stop)
                if applied is not None:
                    self._record(applied, stats, time.monotonic() - started)
            elif target is not None:
                self._write(lambda: applier.flip(target, commit_time), applier, stop)
            if target is not None:
                self.checkpoint = max(self.checkpoint, target)
                durability.applied(self.checkpoint)
            # At least as many due rows as this slice staged: collection keeps up with the
            # rate rows are superseded (a backlog would crowd searches and fill memory).
            self._collect(applier, _GC_BUSY_S, max(1, 2 * plan.rows if plan else 0))
        finally:
            self._staging_commit = None

    def _write(self, write: Callable[[], T], applier: Applier, stop: threading.Event) -> T:
        """One Redis write of the applier: paused while Redis is full; a write that timed out
        makes the next batches smaller, so the stream cannot wedge on it."""

        def halted(seconds: float) -> bool:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                if self.stop_event.wait(min(0.25, seconds)) or stop.is_set():
                    return True
            return stop.is_set()

        try:
            result = self.redis_pause.run(write, applier.client, halted)
        except redis.TimeoutError:
            self._batch_rows = max(1, self._batch_rows // 2)
            log.error(
                "staging a batch timed out (redis.socket_timeout_s = %.0fs); retrying from the "
                "checkpoint with batches of at most %d rows",
                self.settings.redis.socket_timeout_s,
                self._batch_rows,
            )
            raise
        self._batch_rows = min(self._batch_rows * 2, self.settings.pipeline.batch_max_rows)
        return result

    def _record(self, applied: _Applied, stats: ApplyStats, seconds: float) -> None:
        if self.metrics is None:
            return
        for name, count in applied.ops.items():
            self.metrics.changes_applied(name, count)
        self.metrics.batch_applied(sum(applied.ops.values()), seconds)
        now = time.time()
        for commit_time in applied.commit_times:
            self.metrics.visible_after(now - commit_time)
        if stats.dead_letters:
            self.metrics.dead_lettered(stats.dead_letters)
        self.metrics.set_checkpoint(applied.last_lsn.value)


@dataclass(frozen=True, slots=True)
class _Applied:
    """What the metrics need of a batch's transactions: counts, not the changes."""

    ops: dict[str, int]  # changes per operation (insert, update, ...)
    commit_times: list[float]  # of the transactions with changes (epoch seconds)
    last_lsn: Lsn

    @classmethod
    def of(cls, txns: list[Transaction]) -> _Applied | None:
        if not txns:
            return None
        ops: dict[str, int] = {}
        for txn in txns:
            for change in txn.changes:
                name = change.op.name.lower()
                ops[name] = ops.get(name, 0) + 1
        times = [t.commit_time.timestamp() for t in txns if t.commit_time and t.changes]
        return cls(ops, times, txns[-1].commit_lsn)


def kept_columns(tables: dict[str, TableInfo]) -> dict[str, frozenset[str]]:
    """The columns each relation's changes keep once decoded: key, content and metadata
    (partitions found later keep all theirs until the applier resolves them)."""
    return {name: frozenset(table.columns) for name, table in routes(tables.values()).items()}


def _oldest_commit(batch: list[Item]) -> float | None:
    times = [i.commit_time for i in batch if isinstance(i, Transaction) and i.commit_time]
    return min(times).timestamp() if times else None


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

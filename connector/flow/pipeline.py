"""A batch through the daemon: cut into groups of whole transactions (core.rows.commit_groups,
about `pipeline.flip_rows` changes each), each planned in the applier thread, slice by slice,
each slice staged by the stager (flow.stager) while the next one is planned; a group's last slice
flips the visible LSN to the group's last commit and hands it to the durability thread, which
lets the reader confirm it. The stager runs one job at a time, in order, so the flips only move
forward, and a commit waits for its group, not for the whole batch.

While Redis is at maxmemory the staging waits (the reader keeps the stream alive; nothing is
confirmed); a write that timed out makes the next batches smaller (`DaemonState.batch_rows`).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import redis

from connector.config import Settings
from connector.core.changes import Transaction
from connector.core.lsn import Lsn
from connector.core.rows import collect, commit_groups, split
from connector.core.tables import TableInfo
from connector.flow.applier import Applier, Plan
from connector.flow.durability import Durability
from connector.flow.partitions import Partitions
from connector.flow.queue import Idle, Item
from connector.flow.rebuild import Rebuilds
from connector.flow.stager import Row, Stager
from connector.flow.state import DaemonState, InHand
from connector.metrics import Metrics

log = logging.getLogger(__name__)
T = TypeVar("T")

# Wall time per garbage collection step between batches.
_GC_BUSY_S = 0.002


@dataclass(frozen=True, slots=True)
class _Applied:
    """What the metrics need of a group's transactions: counts, not the changes."""

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


@dataclass(frozen=True, slots=True)
class _Slice:
    """A planned slice of a batch, as the stager gets it."""

    plan: Plan | None  # None: the group changed no row (a flip only)
    flip_to: Lsn | None  # on the group's last slice: the LSN to make visible
    commit_time: float | None  # of the group's last transaction (epoch seconds)
    applied: _Applied | None  # on the group's last slice: what the metrics count
    started: float  # when the group's planning began (monotonic)
    oldest_commit: float | None  # of the group's transactions (epoch seconds)


class Pipeline:
    """Plans batches (in the caller's thread, the applier thread) and stages them (in the
    stager's): one attempt's, with its applier, stager and durability thread."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics | None,
        state: DaemonState,
        in_hand: InHand,
        applier: Applier,
        durability: Durability,
        stager: Stager,
        partitions: Partitions,
        rebuilds: Rebuilds,
        stop: threading.Event,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.state = state
        self.in_hand = in_hand
        self.applier = applier
        self.durability = durability
        self.stager = stager
        self.partitions = partitions
        self.rebuilds = rebuilds
        self.stop = stop  # the attempt's (the daemon's is state.stop)
        self.group_rows = settings.pipeline.flip_rows

    def apply(self, batch: list[Item]) -> bool:
        """Plan one batch here, group by group and slice by slice, each staged by the stager
        while the next is planned; a group's last slice flips. True when the batch held row
        changes."""
        self.in_hand.planning_commit = _oldest_commit(batch)
        try:
            return bool(batch) and self._plan(batch)
        finally:
            self.in_hand.planning_commit = None

    def _plan(self, batch: list[Item]) -> bool:
        state = self.state  # its checkpoint moves as the stager flips
        txns = [i for i in batch if isinstance(i, Transaction) and i.commit_lsn > state.checkpoint]
        idle = max((i.wal_end for i in batch if isinstance(i, Idle)), default=Lsn(0))
        if not txns:
            if idle <= state.checkpoint:
                return False
            self._submit(_Slice(None, idle, None, None, time.monotonic(), None), ())
            return False
        routes = self.partitions.routes_for(txns)
        groups = commit_groups(txns, self.group_rows)
        changed = False
        for n, group in enumerate(groups):
            # An idle mark before a later transaction is below its LSN: the last group's only.
            changed |= self._plan_group(group, routes, idle if n == len(groups) - 1 else Lsn(0))
        return changed

    def _plan_group(
        self, txns: list[Transaction], routes: Mapping[str, TableInfo], idle: Lsn
    ) -> bool:
        """Plan a group of whole transactions in slices, each staged while the next one is
        planned; the last one flips to the group's last commit (not a piece of one)."""
        started = time.monotonic()
        oldest = _oldest_commit(txns)
        self.in_hand.planning_commit = oldest
        effects = collect(txns, routes)
        target = None if txns[-1].partial else max(effects.last_lsn, idle)
        last_commit = txns[-1].commit_time
        commit_time = last_commit.timestamp() if last_commit else None
        changed = bool(
            effects.rows or effects.truncated or effects.truncated_leaves or effects.skipped
        )
        slices = split(effects, self.settings.pipeline.batch_max_rows)
        applied = _Applied.of(txns)  # what metrics need: the transactions are let go now
        for n, piece in enumerate(slices):
            last = n == len(slices) - 1
            self.stager.settle(piece.rows)
            plan = self.applier.plan(piece) if changed else None
            job = _Slice(
                plan,
                target if last else None,
                commit_time,
                applied if last else None,
                started,
                oldest,
            )
            self._submit(job, piece.rows)
        return changed

    def _submit(self, job: _Slice, rows: Collection[Row]) -> None:
        self.stager.submit(frozenset(rows), functools.partial(self._stage, job))

    def _stage(self, job: _Slice) -> None:
        """The stager's job: stage a planned slice, flip when it ends its group, confirm."""
        self.in_hand.staging_commit = job.oldest_commit
        applier, plan, target = self.applier, job.plan, job.flip_to
        try:
            if plan is not None:
                stats = self._write(lambda: applier.stage(plan, target, job.commit_time))
                if job.applied is not None:
                    self._record(job.applied, stats.dead_letters, time.monotonic() - job.started)
            elif target is not None:
                self._write(lambda: applier.flip(target, job.commit_time))
            if target is not None:
                self.state.checkpoint = max(self.state.checkpoint, target)
                self.durability.applied(self.state.checkpoint)
            # At least as many due rows as this slice staged: collection keeps up with the
            # rate rows are superseded (a backlog would crowd searches and fill memory).
            self.collect(_GC_BUSY_S, max(1, 2 * plan.rows if plan else 0))
        finally:
            self.in_hand.staging_commit = None

    def _write(self, write: Callable[[], T]) -> T:
        """One Redis write of the applier: paused while Redis is full; a write that timed out
        makes the next batches smaller, so the stream cannot wedge on it."""

        def halted(seconds: float) -> bool:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                if self.state.stop.wait(min(0.25, seconds)) or self.stop.is_set():
                    return True
            return self.stop.is_set()

        state = self.state
        try:
            result = state.redis_pause.run(write, self.applier.client, halted)
        except redis.TimeoutError:
            state.batch_rows = max(1, state.batch_rows // 2)
            log.error(
                "staging a batch timed out (redis.socket_timeout_s = %.0fs); retrying from the "
                "checkpoint with batches of at most %d rows",
                self.settings.redis.socket_timeout_s,
                state.batch_rows,
            )
            raise
        state.batch_rows = min(state.batch_rows * 2, self.settings.pipeline.batch_max_rows)
        return result

    def collect(self, budget_s: float, at_least: int = 0) -> None:
        """A step of garbage collection (in the stager's thread: it writes to Redis too)."""
        self.rebuilds.retire(self.applier.client)
        collector = self.applier.collector
        if collector is None:
            return
        before = (collector.stats.versions_removed, collector.stats.chunks_removed)
        self.applier.collect(budget_s, at_least)
        if self.metrics is not None:
            versions = collector.stats.versions_removed - before[0]
            chunks = collector.stats.chunks_removed - before[1]
            self.metrics.collected(collector.backlog, versions, chunks)

    def _record(self, applied: _Applied, dead_letters: int, seconds: float) -> None:
        if self.metrics is None:
            return
        for name, count in applied.ops.items():
            self.metrics.changes_applied(name, count)
        self.metrics.batch_applied(sum(applied.ops.values()), seconds)
        now = time.time()
        for commit_time in applied.commit_times:
            self.metrics.visible_after(now - commit_time)
        if dead_letters:
            self.metrics.dead_lettered(dead_letters)
        self.metrics.set_checkpoint(applied.last_lsn.value)


def _oldest_commit(batch: Sequence[Item]) -> float | None:
    times = [i.commit_time for i in batch if isinstance(i, Transaction) and i.commit_time]
    return min(times).timestamp() if times else None

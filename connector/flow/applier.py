"""Applying a batch: plan it (flow.planner), stage it (sink.writer), then flip.

Planning and staging are separate steps so that the daemon and the copies can plan the next
batch while this one is staged (flow.stager).

Used by the daemon for every streamed batch and by the copies from a snapshot (the first start,
`connector resync`, a rebuild). A batch is planned and staged for each target (flow.targets: the
current indexes, and a rebuild's new one while it runs), invisibly; it becomes visible when the
checkpoint's visible LSN moves past it. The visible LSN never moves back: a replay re-applies
changes from an older resume position while readers keep seeing the newest state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis

from connector.config import Settings
from connector.core.lsn import Lsn
from connector.core.plan import ApplyStats, BatchWrite
from connector.core.rows import BatchEffects
from connector.embed.base import Embedder
from connector.flow.embedding import Donor
from connector.flow.health import TableHealth
from connector.flow.planner import Planner, Reselect
from connector.flow.targets import Target
from connector.sink.gc import Collector, Retention
from connector.sink.layout import current_specs
from connector.sink.pipes import RedisBudget
from connector.sink.schema import IndexSpec
from connector.sink.view import RedisReads
from connector.sink.writer import IndexWriter

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Plan:
    """A planned batch: one write per target."""

    writes: list[BatchWrite]

    @property
    def rows(self) -> int:
        return max((len(w.rows) for w in self.writes), default=0)


class _TargetParts:
    """The parts that write one target: its writer, planner (reading what the writer writes)
    and garbage collector (with `retention`, or none)."""

    def __init__(
        self,
        writer: IndexWriter,
        target: Target,
        reselect: Reselect | None,
        retention: Retention | None,
        visible: Lsn,
    ) -> None:
        client = writer.client
        self.writer = writer
        donor = None
        if target.donor:
            types = {t: s.vector.type for s in target.donor.values() for t in s.tables}
            keys = {t: s.keys for s in target.donor.values() for t in s.tables}
            donor = Donor(RedisReads(client, keys), types)
        self.planner = Planner(RedisReads(client, writer.keys), target.tables, target.embedder,
                               reselect, donor, dead_letters=not target.rebuild)  # fmt: skip
        self.collector = (
            Collector(client, target.specs, visible, retention, writer.budget)
            if retention is not None
            else None
        )


class Applier:
    """Plans, stages and flips batches of row states for every target (default: the current
    index of every configured index)."""

    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        embedder: Embedder,
        system_id: str = "",
        reselect: Reselect | None = None,
        collect_garbage: bool = False,
        targets: list[Target] | None = None,
        health: TableHealth | None = None,
    ) -> None:
        self.client = client
        self.embedder = embedder
        self.system_id = system_id
        if targets is None:
            targets = [Target(current_specs(client, settings), list(settings.tables), embedder)]

        def writer(specs: dict[str, IndexSpec]) -> IndexWriter:
            slot, limit = settings.postgres.slot, settings.pipeline.deadletter_max
            budget = RedisBudget(settings.redis.pipeline_budget_ms)
            return IndexWriter(client, specs, slot, limit, system_id, budget)

        # The first target's writer flips the checkpoint (one per slot, shared by all).
        self.writer = writer(targets[0].specs)
        self.stats = ApplyStats()
        self.visible = self.writer.visible()  # what readers see; it never moves back
        pipeline = settings.pipeline
        retention = Retention(pipeline.gc_grace_s, pipeline.tombstone_ttl_s)
        collecting = retention if collect_garbage else None
        self._parts = [
            _TargetParts(writer(t.specs), t, reselect, collecting, self.visible) for t in targets
        ]
        self.collector = self._parts[0].collector
        # The daemon's outlives its attempts (an episode is logged once); a copy's only logs.
        self.health = health or TableHealth()
        for part in self._parts:
            if part.planner.dead_letters:
                self.health.follow(part.writer)

    def pace(self, share: float) -> None:
        """Keep Redis busy at most `share` of the time (a rebuild's copy next to searches):
        after each pipeline, Redis is left alone for a while (sink.pipes)."""
        self.writer.budget.share = share
        for part in self._parts:
            part.writer.budget.share = share

    def read_visible(self) -> None:
        """Take the visible LSN Redis holds (the applier never moves it back)."""
        self.visible = max(self.visible, self.writer.visible())

    def resume(self) -> None:
        """Streaming resumes from a checkpoint: from now on a missing one means Redis lost it."""
        self.writer.expect_checkpoint = True
        self.read_visible()

    def raise_floor(self, table: str, lsn: Lsn) -> None:
        for part in self._parts:
            if table in part.writer.keys:
                part.writer.raise_floor(table, lsn)

    def apply(
        self, effects: BatchEffects, checkpoint: Lsn | None, commit_time: float | None = None
    ) -> ApplyStats:
        """Plan the batch, stage it, then make it visible with `checkpoint` (None: stage only,
        as a snapshot copy does until the whole copy is in)."""
        return self.stage(self.plan(effects), checkpoint, commit_time)

    def plan(self, effects: BatchEffects) -> Plan:
        """The batch's writes (Python's work: decode, chunk, embed), for readers now at the
        visible LSN. It may run while an earlier batch of other rows is being staged."""
        return Plan([part.planner.plan(effects, self.visible) for part in self._parts])

    def stage(
        self, plan: Plan, checkpoint: Lsn | None, commit_time: float | None = None
    ) -> ApplyStats:
        """Stage a planned batch (Redis's work), then flip to `checkpoint` unless None. The
        first target's statistics are the batch's."""
        first = ApplyStats()
        for n, (part, batch) in enumerate(zip(self._parts, plan.writes, strict=True)):
            stats = part.writer.stage(batch)
            if part.planner.dead_letters:
                self.health.observe(batch, part.writer)
            if n == 0:
                first = stats
            if part.collector is not None and batch.rows:
                # Handed over per piece: nothing here grows with the transaction's size.
                lsn = max(r.version.lsn for r in batch.rows)
                part.collector.staged(
                    lsn, [(r.state.table.name, r.state.key) for r in batch.rows if r.known]
                )
        self.stats.add(first)
        if checkpoint is not None:
            self.flip(checkpoint, commit_time)
        return first

    def flip(self, lsn: Lsn, commit_time: float | None = None) -> None:
        """Resume after `lsn`; readers see everything up to it (never less than before)."""
        visible = max(self.visible, lsn)
        self.writer.flip(lsn, visible, commit_time)
        self.visible = visible
        for part in self._parts:
            if part.collector is not None:
                part.collector.flipped(visible)

    def collect(self, budget_s: float, at_least: int = 0) -> None:
        """One bounded step of garbage collection (the daemon's, between batches): about
        `budget_s`, and at least `at_least` due rows, for each target."""
        for part in self._parts:
            if part.collector is not None:
                part.collector.step(budget_s / len(self._parts), at_least)

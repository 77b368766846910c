"""Applying a batch: plan it (flow.planner), stage it (sink.writer), then flip.

Planning and staging are separate steps so that the daemon and the copies can plan the next
batch while this one is staged (flow.stager).

Used by the daemon for every streamed batch and by the copies from a snapshot (the first start,
`connector resync`). A batch is staged invisibly; it becomes visible when the checkpoint's visible
LSN moves past it. The visible LSN never moves back: a replay re-applies changes from an older
resume position while readers keep seeing the newest state.
"""

from __future__ import annotations

import logging

import redis

from connector.config import Settings
from connector.core.lsn import Lsn
from connector.core.rows import BatchEffects
from connector.embed.base import Embedder
from connector.flow.planner import Planner, Reselect
from connector.sink.gc import Collector
from connector.sink.writer import ApplyStats, BatchWrite, IndexWriter

log = logging.getLogger(__name__)


class Applier:
    """Plans, stages and flips batches of row states for every configured index."""

    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        embedder: Embedder,
        system_id: str = "",
        reselect: Reselect | None = None,
        collect_garbage: bool = False,
    ) -> None:
        self.client = client
        self.embedder = embedder
        self.system_id = system_id
        self.writer = IndexWriter(client, settings, system_id)
        self.planner = Planner(self.writer, settings, embedder, reselect)
        self.stats = ApplyStats()
        self.visible = self.writer.visible()  # what readers see; it never moves back
        self.collector = Collector(client, settings, self.visible) if collect_garbage else None
        self._superseded: list[tuple[str, str]] = []  # rows staged since the last flip

    def ensure_indexes(self) -> None:
        self.writer.ensure_indexes(self.embedder)

    def read_visible(self) -> None:
        """Take the visible LSN Redis holds (the applier never moves it back)."""
        self.visible = max(self.visible, self.writer.visible())

    def resume(self) -> None:
        """Streaming resumes from a checkpoint: from now on a missing one means Redis lost it."""
        self.writer.expect_checkpoint = True
        self.read_visible()

    def raise_floor(self, table: str, lsn: Lsn) -> None:
        self.writer.raise_floor(table, lsn)

    def apply(
        self, effects: BatchEffects, checkpoint: Lsn | None, commit_time: float | None = None
    ) -> ApplyStats:
        """Plan the batch, stage it, then make it visible with `checkpoint` (None: stage only,
        as a snapshot copy does until the whole copy is in)."""
        return self.stage(self.plan(effects), checkpoint, commit_time)

    def plan(self, effects: BatchEffects) -> BatchWrite:
        """The batch's writes (Python's work: decode, chunk, embed), for readers now at the
        visible LSN. It may run while an earlier batch of other rows is being staged."""
        return self.planner.plan(effects, self.visible)

    def stage(
        self, batch: BatchWrite, checkpoint: Lsn | None, commit_time: float | None = None
    ) -> ApplyStats:
        """Stage a planned batch (Redis's work), then flip to `checkpoint` unless None."""
        stats = self.writer.stage(batch)
        if self.collector is not None:
            self._superseded += [(r.state.table.name, r.state.key) for r in batch.rows if r.known]
        self.stats.add(stats)
        if checkpoint is not None:
            self.flip(checkpoint, commit_time)
        return stats

    def flip(self, lsn: Lsn, commit_time: float | None = None) -> None:
        """Resume after `lsn`; readers see everything up to it (never less than before)."""
        visible = max(self.visible, lsn)
        self.writer.flip(lsn, visible, commit_time)
        self.visible = visible
        if self.collector is not None:
            self.collector.flipped(visible, self._superseded)
            self._superseded = []

    def collect(self, budget_s: float, at_least: int = 0) -> None:
        """One bounded step of garbage collection (the daemon's, between batches): about
        `budget_s`, and at least `at_least` due rows."""
        if self.collector is not None:
            self.collector.step(budget_s, at_least)

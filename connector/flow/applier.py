"""Applying a batch: plan it (flow.planner), then write it (sink.writer), again if it raced.

Used by the daemon for every streamed batch and by the copies from a snapshot (the first start,
`connector resync`). A plan is made from what Redis held when it read; if another writer changes
one of its rows before the write lands (a resync in another process, a FLUSHALL), the write is
refused and the batch is planned again, so an older change never overwrites a newer one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import redis

from connector.config import Settings
from connector.core.lsn import Lsn
from connector.core.rows import BatchEffects
from connector.core.tables import TableInfo
from connector.embed.base import Embedder
from connector.errors import RedisIndexError
from connector.flow.planner import Planner, Reselect
from connector.sink.writer import ApplyStats, IndexWriter, StalePlan

log = logging.getLogger(__name__)

_MAX_ATTEMPTS = 20


class Applier:
    """Plans and writes batches of row states for every configured index."""

    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        embedder: Embedder,
        system_id: str = "",
        reselect: Reselect | None = None,
    ) -> None:
        self.client = client
        self.embedder = embedder
        self.system_id = system_id
        self.writer = IndexWriter(client, settings, system_id)
        self.planner = Planner(self.writer, settings, embedder, reselect)
        self.stats = ApplyStats()

    def ensure_indexes(self) -> None:
        self.writer.ensure_indexes(self.embedder)

    def resume(self) -> None:
        """Streaming resumes from a checkpoint: from now on a missing one means Redis lost it."""
        self.writer.expect_checkpoint = True

    def sweep(self, tables: Iterable[TableInfo], older_than: Lsn) -> int:
        """Remove rows last written before `older_than` (after a copy): see IndexWriter.sweep."""
        return self.writer.sweep(tables, older_than)

    def raise_floor(self, table: str, lsn: Lsn) -> None:
        self.writer.raise_floor(table, lsn)

    def apply(
        self, effects: BatchEffects, checkpoint: Lsn | None, commit_time: float | None = None
    ) -> ApplyStats:
        """Write the batch atomically, with `checkpoint` (None during a snapshot copy)."""
        for _attempt in range(_MAX_ATTEMPTS):
            batch = self.planner.plan(effects, checkpoint, commit_time)
            try:
                stats = self.writer.write(batch)
            except StalePlan:
                pass
            except redis.WatchError as exc:
                cause = exc.__context__
                if isinstance(cause, redis.ConnectionError | redis.TimeoutError):
                    raise cause from None  # the connection failed, no other writer raced
            else:
                self.planner.written()
                self.stats.add(stats)
                return stats
            self.writer.check_checkpoint()
            log.debug("batch at %s raced another writer; planning it again", checkpoint)
        raise RedisIndexError(
            f"could not write the batch ending at {effects.last_lsn}: its keys kept changing "
            f"under another writer {_MAX_ATTEMPTS} times (two connectors on one index?)"
        )

    def write_checkpoint(self, lsn: Lsn, commit_time: float | None = None) -> None:
        """Move the checkpoint alone (transactions that touched no configured row)."""
        self.apply(BatchEffects(last_lsn=lsn), lsn, commit_time)
        self.resume()

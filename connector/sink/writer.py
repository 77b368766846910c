"""The Redis writes of the connector: staging versions, and the flip that makes them visible.

The flow's planner hands over finished writes (core.plan: chunks cut, vectors embedded, chunk ids
assigned); the writer reads nothing for it (the planner reads through sink.view.RedisReads).
`stage` writes the new chunk hashes, then the rows' new manifest versions, truncate floors and
dead letters, in pipelines cut by their Redis time (sink.pipes), never in MULTI: a query waits
behind one short pipeline at most, and the versions it writes are invisible (their LSN is above
the visible LSN). `flip` then moves the checkpoint's visible LSN past them: one single-key
write, whatever the size of the source transaction. Nothing here needs two keys in one hash slot.

Staging is idempotent: a version's chunk ids and field are functions of its LSN and text, so a
restart that stages the same transaction again writes the same keys.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import redis

from connector.core.budget import WRITE_KIND, vector_kind
from connector.core.changes import RowChange
from connector.core.fulltext import ORIGINAL_FIELD, content_fields
from connector.core.keys import staged_key
from connector.core.lsn import Lsn
from connector.core.plan import ApplyStats, BatchWrite, RowWrite
from connector.core.versions import LEAF_FIELD, Version
from connector.errors import ResyncNeeded
from connector.sink.checkpoint import Flip, checkpoint_fields, raise_visible, read_visible
from connector.sink.pipes import Pipes, RedisBudget
from connector.sink.redis_client import Fields
from connector.sink.schema import IndexSpec
from connector.sink.view import scan_manifests

log = logging.getLogger(__name__)


class IndexWriter:
    """Stages planned batches into the physical indexes `specs` (sink.layout, by index name),
    and flips the visible LSN of `slot`'s checkpoint. Dead letters go to each index's stream,
    trimmed at about `deadletter_max` entries. Its pipelines are cut by `budget` (sink.pipes;
    shared with the target's garbage collector)."""

    def __init__(
        self,
        client: redis.Redis,
        specs: Mapping[str, IndexSpec],
        slot: str,
        deadletter_max: int,
        system_id: str = "",
        budget: RedisBudget | None = None,
    ) -> None:
        self.client = client
        self.budget = budget or RedisBudget(2.0)
        self.slot = slot
        self.system_id = system_id
        self.deadletter_max = deadletter_max
        self.specs = dict(specs)
        self.keys = {table: spec.keys for spec in self.specs.values() for table in spec.tables}
        self._letters = {t: spec.deadletter for spec in self.specs.values() for t in spec.tables}
        self._staged_key = staged_key(slot)
        self._flip = Flip(client, slot)
        # Set once this writer has flipped or resumed from a checkpoint: from then on a missing
        # checkpoint means Redis lost data.
        self.expect_checkpoint = False

    def set_visible(self, lsn: Lsn) -> None:
        """Raise the visible LSN alone (never lowers it): a resync of every table while no
        daemon streams, whose copy holds all of them as of `lsn`."""
        raise_visible(self.client, self.slot, lsn)

    def visible(self) -> Lsn:
        """The checkpoint's visible LSN (0/0 before the first flip)."""
        return read_visible(self.client, self.slot)

    # ----------------------------------------------------------------- staging

    def stage(self, batch: BatchWrite) -> ApplyStats:
        """Write the batch's chunks, then its manifests, floors and dead letters, invisibly."""
        stats = batch.stats
        with Pipes(self.client, self.budget, first_alone=True) as out:
            # First, so a reader knows a version is pending: the first pipeline is answered
            # before any other is sent (first_alone), and Redis runs its commands in order, so
            # the marker is set before any chunk, and costs a lone commit no round trip of its own.
            if batch.rows or batch.truncated:
                out.add(WRITE_KIND).set(self._staged_key, str(batch.last_lsn.value))
            for row in batch.rows:
                self._stage_chunks(out, row, stats)
            for table, lsn in batch.truncated.items():
                out.add(WRITE_KIND).hset(self.keys[table].floor(table), str(lsn.value), "")
                if table in batch.truncated_staged:
                    stats.deleted += self._delete_staged(out, table, lsn, batch.rows)
            for row in batch.rows:
                self._stage_version(out, row, stats)
            for change, error in batch.letters:
                self._stage_dead_letter(out, change, error, batch.last_lsn, stats)
        return stats

    def _stage_chunks(self, out: Pipes, row: RowWrite, stats: ApplyStats) -> None:
        table, key = row.state.table.name, row.state.key
        keys = self.keys[table]
        kind = vector_kind(keys.prefix)
        # A chunk id names its text and LSN, not its metadata: staging a row again at the same
        # LSN (a later piece of its transaction, or after a crash) rewrites the same hash, so
        # metadata that became NULL must go from it.
        nulls = [c for c in row.state.table.settings.metadata if c not in row.metadata]
        for chunk in row.chunks:
            fields: Fields = {
                "embedding": chunk.vector or b"", "table": table, "pk": key,
                "chunk": chunk.position, "lsn": row.version.lsn.value,
            }  # fmt: skip
            fields.update(content_fields(chunk.text).items())  # `content`, as indexed
            fields.update(row.metadata)
            # A text kept as written that no longer applies (a chunk repaired in place) goes
            # too: deleting a field that is not there costs Redis no re-indexing.
            gone = nulls if ORIGINAL_FIELD in fields else [*nulls, ORIGINAL_FIELD]
            pipe = out.add(kind)  # the HDEL in the same pipeline, its cost in the HSET's
            pipe.hset(keys.chunk(table, key, chunk.id), mapping=fields)
            if gone:
                pipe.hdel(keys.chunk(table, key, chunk.id), *gone)
        stats.chunks_written += len(row.chunks)

    def _stage_version(self, out: Pipes, row: RowWrite, stats: ApplyStats) -> None:
        table, key = row.state.table.name, row.state.key
        keys = self.keys[table]
        manifest = keys.row(table, key)
        # Only additions: a pipeline cut off by a dead connection may still reach Redis after
        # the next attempt (commands the kernel had buffered), and an addition arriving late is
        # the same addition again. Replaced pending versions are overwritten by their own
        # transaction's staging (same field); chunks no version lists are collected (sink.gc).
        fields: Fields = {str(row.version.lsn.value): row.version.value}
        if row.state.leaf:  # the partition it is in: a TRUNCATE of that partition finds it
            fields[LEAF_FIELD] = row.state.leaf
        pipe = out.add(WRITE_KIND, 2)
        pipe.hset(manifest, mapping=fields)
        pipe.persist(manifest)  # a row deleted before keeps no tombstone TTL
        if row.state.deleted:
            stats.deleted += 1
        elif not row.chunks and row.version.chunks:
            stats.metadata_only += 1
        else:
            stats.upserted += 1

    def _delete_staged(self, out: Pipes, table: str, lsn: Lsn, rows: list[RowWrite]) -> int:
        """A TRUNCATE after changes of its own transaction that earlier pieces staged: the floor
        at the transaction's LSN hides the versions below it, not those at it, so each row with
        a version at that LSN gets a delete in its place (the same manifest field), except the
        rows this batch writes again after the truncate. Their chunks, listed by no version
        any more, are collected (sink.gc). A scan of the table's manifests, in bounded steps."""
        keys = self.keys[table]
        again = {r.state.key for r in rows if r.state.table.name == table}
        at, gone = str(lsn.value), Version(lsn, deleted=True).value
        deleted = 0
        for name, manifest in scan_manifests(self.client, keys, table):
            staged = next((v for v in manifest.versions if v.lsn == lsn), None)
            if staged is None or staged.deleted or keys.key_from_row(name, table) in again:
                continue
            out.add(WRITE_KIND).hset(name, at, gone)
            deleted += 1
        return deleted

    def _stage_dead_letter(
        self, out: Pipes, change: RowChange, error: str, lsn: Lsn, stats: ApplyStats
    ) -> None:
        stream = self._letters.get(change.table)
        if stream is None:
            return
        # flow.health says it: rate-limited per table, and one ERROR when the table is failing
        log.debug("dead-lettered a row of %s: %s", change.table, error)
        entry: Fields = {
            "table": change.table,
            "op": change.op.value,
            "lsn": str(lsn),
            "error": error,
            "row": _row_summary(change),
        }
        out.add(WRITE_KIND).xadd(stream, entry, maxlen=self.deadletter_max, approximate=True)
        stats.dead_letters += 1

    def raise_floor(self, table: str, lsn: Lsn) -> None:
        """Hide every version of `table` below `lsn` from readers at or past it (a resync:
        the copy at `lsn` holds every row the table still has)."""
        self.client.hset(self.keys[table].floor(table), str(lsn.value), "")

    # ----------------------------------------------------------------- the flip

    def flip(self, lsn: Lsn, visible: Lsn, commit_time: float | None = None) -> None:
        """Set the checkpoint: resume the stream after `lsn`, readers see versions up to
        `visible`. Raises ResyncNeeded when Redis lost the checkpoint this writer relies on."""
        fields = checkpoint_fields(lsn, self.system_id, commit_time)
        if not self._flip(fields, visible, self.expect_checkpoint):
            raise ResyncNeeded(
                f"Redis lost the checkpoint of slot {self.slot} (FLUSHALL, "
                "restart without persistence, or eviction): resynchronising from a snapshot"
            )
        self.expect_checkpoint = True


def _row_summary(change: RowChange) -> str:
    row = change.new or change.old
    parts = [f"{k}={(v.text or '')[:80]!r}" for k, v in list(row.items())[:8]]
    return ", ".join(parts)

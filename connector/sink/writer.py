"""The Redis writes of the connector: staging versions, and the flip that makes them visible.

The flow's planner hands over finished writes (chunks cut, vectors embedded, chunk ids assigned).
`stage` writes the new chunk hashes, then the rows' new manifest versions, truncate floors and
dead letters, in pipelines of a bounded number of commands, never in MULTI: a query waits behind a
few commands at most, and the versions it writes are invisible (their LSN is above the visible
LSN). `flip` then moves the checkpoint's visible LSN past them: one single-key write, whatever
the size of the source transaction. Nothing here needs two keys in one hash slot.

Staging is idempotent: a version's chunk ids and field are functions of its LSN and text, so a
restart that stages the same transaction again writes the same keys.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import redis

from connector.config import Settings
from connector.core.changes import RowChange
from connector.core.fulltext import ORIGINAL_FIELD, content_fields
from connector.core.keys import checkpoint_key, staged_key
from connector.core.lsn import Lsn
from connector.core.rows import RowState
from connector.core.versions import LEAF_FIELD, Manifest, Version, parse_floors
from connector.errors import ResyncNeeded
from connector.sink.checkpoint import checkpoint_fields
from connector.sink.redis_client import Fields, read_fields, text
from connector.sink.schema import IndexSpec, index_specs
from connector.sink.view import read_manifests, scan_manifests

log = logging.getLogger(__name__)

# Commands per pipeline round trip while staging: a query waits behind at most this many
# (each a few microseconds, an HNSW insertion for a chunk) and memory stays bounded.
STAGE_COMMANDS = 64
# Commands per pipeline of a paced staging (a rebuild's copy next to searches): shorter waits.
_PACED_COMMANDS = 8
# Staging pipelines in flight while the next is built (each on a connection of its own), and
# their sender: one, so that a query waits behind at most one pipeline of staging.
_IN_FLIGHT = 1
_SENDERS = ThreadPoolExecutor(_IN_FLIGHT, thread_name_prefix="connector-send")

# Sets the checkpoint only where it still exists (or may be created): a FLUSHALL or an eviction
# between staging and the flip must not leave a fresh checkpoint over an index that lost data.
_FLIP = """
if ARGV[1] == '1' and redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
"""


@dataclass(slots=True)
class ApplyStats:
    upserted: int = 0
    deleted: int = 0
    metadata_only: int = 0
    skipped_stale: int = 0
    chunks_written: int = 0
    chunks_deleted: int = 0
    chunks_embedded: int = 0
    dead_letters: int = 0
    reselected: int = 0  # rows whose left-out content columns were read back from Postgres

    def add(self, other: ApplyStats) -> None:
        for name in ApplyStats.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(slots=True)
class NewChunk:
    id: str
    text: str
    vector: bytes | None
    position: int


@dataclass(slots=True)
class RowWrite:
    """The finished write of one row: its new version and the chunk hashes it adds. Pending
    versions at or after its LSN (a restart staging the same transaction again, or a row
    changed twice in one large transaction) are `replaces`: the new version follows them."""

    state: RowState
    version: Version
    chunks: list[NewChunk] = field(default_factory=list)
    metadata: dict[str, str | float] = field(default_factory=dict)
    replaces: list[Version] = field(default_factory=list)
    known: list[Version] = field(default_factory=list)  # the row's versions, for vector reuse
    kept: list[NewChunk] = field(default_factory=list)  # a copy's unchanged chunks, to check


@dataclass(slots=True)
class BatchWrite:
    """Everything one batch (or one piece of a large transaction) stages."""

    rows: list[RowWrite]
    truncated: dict[str, Lsn]  # table -> LSN of its last TRUNCATE in the batch
    letters: list[tuple[RowChange, str]]  # dead letters: the change and why
    last_lsn: Lsn
    stats: ApplyStats = field(default_factory=ApplyStats)
    # Tables of `truncated` whose rows staged at the truncate's LSN (earlier pieces of its
    # transaction) are deleted at it (core.rows.BatchEffects.truncated_staged).
    truncated_staged: set[str] = field(default_factory=set)


class IndexWriter:
    """Reads what the planner needs, stages planned batches and flips the visible LSN, for every
    configured index."""

    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        system_id: str = "",
        specs: Mapping[str, IndexSpec] | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.system_id = system_id
        # The physical indexes written (sink.layout), by index name: the settings' own by default.
        self.specs = dict(specs) if specs is not None else index_specs(settings.tables)
        self.keys = {table: spec.keys for spec in self.specs.values() for table in spec.tables}
        self._letters = {t: spec.deadletter for spec in self.specs.values() for t in spec.tables}
        self._checkpoint_key = checkpoint_key(settings.postgres.slot)
        self._staged_key = staged_key(settings.postgres.slot)
        self._flip = client.register_script(_FLIP)
        # Set once this writer has flipped or resumed from a checkpoint: from then on a missing
        # checkpoint means Redis lost data.
        self.expect_checkpoint = False
        self.share = 1.0  # the share of time staging may keep Redis busy (Applier.pace)

    # ----------------------------------------------------------------- reads for the planner

    def manifests(self, rows: Sequence[tuple[str, str]]) -> list[Manifest]:
        """The manifest of each row (table, encoded key), in order."""
        return read_manifests(self.client, self.keys, rows)

    def rows_in_leaf(self, table: str, leaf: str) -> list[str]:
        """The encoded keys of `table`'s rows whose manifest says they are in partition `leaf`
        (a scan of the table's manifests, in bounded steps: a TRUNCATE of one partition)."""
        keys = self.keys[table]
        found: list[str] = []
        names: list[bytes] = []

        def check() -> None:
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                pipe.hget(name, LEAF_FIELD)
            for name, value in zip(names, pipe.execute(), strict=True):
                if value is not None and text(value) == leaf:
                    found.append(keys.key_from_row(text(name), table))
            names.clear()

        for name in self.client.scan_iter(match=keys.row_pattern(table), count=1000):
            names.append(name)
            if len(names) >= 500:
                check()
        check()
        return found

    def set_visible(self, lsn: Lsn) -> None:
        """Raise the visible LSN alone (never lowers it): a resync of every table while no
        daemon streams, whose copy holds all of them as of `lsn`."""
        if lsn > self.visible():
            self.client.hset(self._checkpoint_key, "visible", str(lsn))

    def floors(self, tables: Iterable[str]) -> dict[str, list[Lsn]]:
        """The truncate floors of each table."""
        names = sorted(set(tables))
        pipe = self.client.pipeline(transaction=False)
        for table in names:
            pipe.hgetall(self.keys[table].floor(table))
        return {t: parse_floors(raw) for t, raw in zip(names, pipe.execute(), strict=True)}

    def chunk_fields(
        self, chunks: Sequence[tuple[str, str, str]], *fields: str
    ) -> list[list[bytes | None]]:
        """Fields of chunk hashes (table, row key, chunk id); None where a chunk is gone."""
        keys = [self.keys[t].chunk(t, k, c) for t, k, c in chunks]
        return [values for _key, values in read_fields(self.client, keys, *fields)]

    def visible(self) -> Lsn:
        """The checkpoint's visible LSN (0/0 before the first flip)."""
        raw = self.client.hget(self._checkpoint_key, "visible")
        return Lsn.parse(text(raw)) if raw else Lsn(0)

    # ----------------------------------------------------------------- staging

    def stage(self, batch: BatchWrite) -> ApplyStats:
        """Write the batch's chunks, then its manifests, floors and dead letters, invisibly."""
        stats = batch.stats
        with _Bounded(self.client, self.share) as out:
            if batch.rows or batch.truncated:  # first, so a reader knows a version is pending
                out.pipe.set(self._staged_key, str(batch.last_lsn.value))
                out.queued()
            for row in batch.rows:
                self._stage_chunks(out, row, stats)
            for table, lsn in batch.truncated.items():
                out.pipe.hset(self.keys[table].floor(table), str(lsn.value), "")
                out.queued()
                if table in batch.truncated_staged:
                    stats.deleted += self._delete_staged(out, table, lsn, batch.rows)
            for row in batch.rows:
                self._stage_version(out, row, stats)
            for change, error in batch.letters:
                self._stage_dead_letter(out, change, error, batch.last_lsn, stats)
        return stats

    def _stage_chunks(self, out: _Bounded, row: RowWrite, stats: ApplyStats) -> None:
        table, key = row.state.table.name, row.state.key
        keys = self.keys[table]
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
            out.pipe.hset(keys.chunk(table, key, chunk.id), mapping=fields)
            # A text kept as written that no longer applies (a chunk repaired in place) goes
            # too: deleting a field that is not there costs Redis no re-indexing.
            gone = nulls if ORIGINAL_FIELD in fields else [*nulls, ORIGINAL_FIELD]
            if gone:
                out.pipe.hdel(keys.chunk(table, key, chunk.id), *gone)
            out.queued(2 if nulls else 1)
        stats.chunks_written += len(row.chunks)

    def _stage_version(self, out: _Bounded, row: RowWrite, stats: ApplyStats) -> None:
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
        out.pipe.hset(manifest, mapping=fields)
        out.pipe.persist(manifest)  # a row deleted before keeps no tombstone TTL
        out.queued(2)
        if row.state.deleted:
            stats.deleted += 1
        elif not row.chunks and row.version.chunks:
            stats.metadata_only += 1
        else:
            stats.upserted += 1

    def _delete_staged(self, out: _Bounded, table: str, lsn: Lsn, rows: list[RowWrite]) -> int:
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
            out.pipe.hset(name, at, gone)
            out.queued()
            deleted += 1
        return deleted

    def _stage_dead_letter(
        self, out: _Bounded, change: RowChange, error: str, lsn: Lsn, stats: ApplyStats
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
        limit = self.settings.pipeline.deadletter_max
        out.pipe.xadd(stream, entry, maxlen=limit, approximate=True)
        out.queued()
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
        fields["visible"] = str(visible)
        args = ["1" if self.expect_checkpoint else "0"]
        for name, value in fields.items():
            args += [str(name), str(value)]
        if not self._flip(keys=[self._checkpoint_key], args=args):
            raise ResyncNeeded(
                f"Redis lost the checkpoint of slot {self.settings.postgres.slot} (FLUSHALL, "
                "restart without persistence, or eviction): resynchronising from a snapshot"
            )
        self.expect_checkpoint = True


class _Bounded:
    """Non-transactional pipelines of STAGE_COMMANDS commands. The first is sent and answered
    before any other (it marks a version as pending); after it, up to `_IN_FLIGHT` are in
    flight on their own connections, so Python encodes one while Redis works on another. The
    order between them does not matter: everything they write is invisible until the flip."""

    def __init__(self, client: redis.Redis, share: float = 1.0) -> None:
        self.client = client
        self.share = share
        self.pipe = client.pipeline(transaction=False)
        self._count = 0
        self._first = True
        self._sent: deque[Future[list[object]]] = deque()

    def queued(self, commands: int = 1) -> None:
        """`commands` more were added to `pipe`: send them once there are enough."""
        self._count += commands
        if self._count >= (STAGE_COMMANDS if self.share >= 1.0 else _PACED_COMMANDS):
            self.send()

    def send(self) -> None:
        if not self._count:
            return
        pipe, self.pipe, self._count = self.pipe, self.client.pipeline(transaction=False), 0
        if self._first or self.share < 1.0:  # paced: each one answered, then a pause
            self._first = False
            began = time.monotonic()
            pipe.execute()
            if self.share < 1.0:
                time.sleep((time.monotonic() - began) * (1.0 / self.share - 1.0))
            return
        if len(self._sent) >= _IN_FLIGHT:
            self._sent.popleft().result()
        self._sent.append(_SENDERS.submit(pipe.execute))

    def __enter__(self) -> _Bounded:
        return self

    def __exit__(self, kind: object, *_exc: object) -> None:
        try:
            if kind is None:
                self.send()
            while self._sent:  # every pipeline is answered before the caller goes on
                sent = self._sent.popleft()
                if kind is None:
                    sent.result()
                else:
                    sent.exception()
        finally:
            self._sent.clear()
            self.pipe.reset()


def _row_summary(change: RowChange) -> str:
    row = change.new or change.old
    parts = [f"{k}={(v.text or '')[:80]!r}" for k, v in list(row.items())[:8]]
    return ", ".join(parts)

"""The Redis writes of the connector: a planned batch in one MULTI/EXEC, and the bookkeeping
around it (floors, the sweep after a copy, the checkpoint alone).

The flow's planner hands over finished writes (chunks cut, vectors embedded), planned from what
Redis held when it read. `write` WATCHes the row keys, checks that they still hold what the plan
saw, and writes chunk upserts, deletion of chunks a row no longer has, row manifests, tombstones,
truncates, dead letters and the checkpoint in one MULTI/EXEC: a query sees a source transaction
all at once or not at all, and the checkpoint never says more than Redis holds. A plan whose rows
changed meanwhile (another writer) is refused with `StalePlan`, to be planned again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from connector.config import Settings
from connector.core.changes import RowChange
from connector.core.keys import Keyspace, checkpoint_key
from connector.core.lsn import Lsn
from connector.core.pgtypes import metadata_field
from connector.core.rows import RowState
from connector.core.tables import TableInfo
from connector.errors import ResyncNeeded
from connector.sink.checkpoint import checkpoint_fields
from connector.sink.redis_client import longer_timeout, read_fields, scan_fields, text
from connector.sink.schema import Model, ensure_index, index_specs

log = logging.getLogger(__name__)

_SWEEP_BATCH = 500


class StalePlan(Exception):
    """The rows of a plan changed in Redis after it was planned: plan the batch again."""


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


@dataclass(frozen=True, slots=True)
class Manifest:
    """What Redis holds of a row: the LSN that wrote it and its chunks' text hashes."""

    lsn: Lsn
    hashes: tuple[str, ...]

    @classmethod
    def parse(cls, raw: Mapping[bytes, bytes]) -> Manifest | None:
        if not raw:
            return None
        hashes = raw.get(b"hashes", b"").decode()
        return cls(Lsn(int(raw[b"lsn"])), tuple(hashes.split(",")) if hashes else ())


@dataclass(frozen=True, slots=True)
class Held:
    """A row's marks in Redis: its manifest and its tombstone's LSN (either may be absent)."""

    manifest: Manifest | None
    tomb: Lsn | None


@dataclass(slots=True)
class RowWrite:
    """The finished write of one row: its chunks with their vectors, a metadata-only update
    (no content column changed), or a delete (`state.deleted`)."""

    state: RowState
    held: Held
    chunks: list[str] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)
    vectors: list[bytes | None] = field(default_factory=list)
    metadata_only: bool = False

    @property
    def old_count(self) -> int:
        return len(self.held.manifest.hashes) if self.held.manifest else 0


@dataclass(slots=True)
class BatchWrite:
    """Everything one batch writes, and what its plan saw of the keys it writes."""

    rows: list[RowWrite]
    seen: dict[tuple[str, str], Held]  # every row the plan read, written or skipped as stale
    floors: dict[str, Lsn]  # the truncate floors the plan saw
    truncated: dict[str, Lsn]  # table -> LSN of its last TRUNCATE in the batch
    letters: list[tuple[RowChange, str]]  # dead letters: the change and why
    last_lsn: Lsn
    checkpoint: Lsn | None = None
    commit_time: float | None = None
    stats: ApplyStats = field(default_factory=ApplyStats)


class IndexWriter:
    """Reads what the planner needs and writes planned batches, for every configured index."""

    def __init__(self, client: redis.Redis, settings: Settings, system_id: str = "") -> None:
        self.client = client
        self.settings = settings
        self.system_id = system_id
        self.specs = index_specs(settings.tables)
        self.keys = {t.qualified_name: Keyspace(t.index_name) for t in settings.tables}
        self._checkpoint_key = checkpoint_key(settings.postgres.slot)
        # Set once this writer has written or resumed from a checkpoint: from then on a missing
        # checkpoint means Redis lost data.
        self.expect_checkpoint = False

    def ensure_indexes(self, model: Model) -> None:
        for spec in self.specs.values():
            ensure_index(self.client, spec, model)

    def check_checkpoint(self) -> None:
        """Raise ResyncNeeded when Redis lost the checkpoint this writer relies on."""
        if self.expect_checkpoint and not self.client.exists(self._checkpoint_key):
            raise ResyncNeeded(
                f"Redis lost the checkpoint of slot {self.settings.postgres.slot} (FLUSHALL, "
                "restart without persistence, or eviction): resynchronising from a snapshot"
            )

    # ----------------------------------------------------------------- reads for the planner

    def held(self, rows: Sequence[tuple[str, str]]) -> list[Held]:
        """What Redis holds of each row (table, encoded key) now, in order."""
        pipe = self.client.pipeline(transaction=False)
        for table, key in rows:
            keys = self.keys[table]
            pipe.hgetall(keys.row(table, key))
            pipe.get(keys.tomb(table, key))
        replies = pipe.execute()
        return [
            Held(Manifest.parse(replies[2 * i]), _lsn(replies[2 * i + 1])) for i in range(len(rows))
        ]

    def floors(self, tables: Iterable[str]) -> dict[str, Lsn]:
        """The truncate floor of each table that has one."""
        names = sorted(set(tables))
        if not names:
            return {}
        values = self.client.mget([self.keys[t].floor(t) for t in names])
        return {t: Lsn(int(v)) for t, v in zip(names, values, strict=True) if v is not None}

    def stored_vectors(self, chunks: Sequence[tuple[str, str, int]]) -> list[bytes | None]:
        """The vectors of chunks (table, row key, chunk number), None where the chunk is gone."""
        pipe = self.client.pipeline(transaction=False)
        for table, key, n in chunks:
            pipe.hget(self.keys[table].chunk(table, key, n), "embedding")
        return list(pipe.execute())

    # ----------------------------------------------------------------- the batch write

    def write(self, batch: BatchWrite) -> ApplyStats:
        """Write the batch in one MULTI/EXEC, with its checkpoint (None during a snapshot copy:
        the checkpoint is written once the whole copy is in). Raises StalePlan when a row it
        planned from changed meanwhile (or redis.WatchError when one changes during the write)."""
        stats = batch.stats
        with self.client.pipeline(transaction=True) as pipe:
            pipe.watch(*self._watched(batch))  # type: ignore[no-untyped-call]
            self.check_checkpoint()
            self._check_unchanged(batch)
            doomed = self._truncated_rows(batch.truncated)
            pipe.multi()
            for table, (lsn, rows) in doomed.items():
                self._write_truncate(pipe, table, lsn, rows, stats)
            for row in batch.rows:
                self._write_row(pipe, row, stats)
            self._write_dead_letters(pipe, batch.letters, batch.last_lsn, stats)
            if batch.checkpoint is not None:
                fields = checkpoint_fields(batch.checkpoint, self.system_id, batch.commit_time)
                pipe.hset(self._checkpoint_key, mapping=fields)
            with longer_timeout(pipe, self.settings.redis.write_timeout_s):
                pipe.execute()
        return stats

    def _watched(self, batch: BatchWrite) -> list[str]:
        keys = [self._checkpoint_key] if batch.checkpoint is not None else []
        for table, key in batch.seen:
            space = self.keys[table]
            keys += [space.row(table, key), space.tomb(table, key)]
        for table in {*batch.truncated, *batch.floors, *(t for t, _k in batch.seen)}:
            keys.append(self.keys[table].floor(table))
        return keys or [self._checkpoint_key]

    def _check_unchanged(self, batch: BatchWrite) -> None:
        """The rows and floors hold what the plan saw (they are WATCHed from here to EXEC)."""
        idents = list(batch.seen)
        now = self.held(idents)
        if any(batch.seen[ident] != held for ident, held in zip(idents, now, strict=True)):
            raise StalePlan
        tables = {t for t, _k in idents} | set(batch.floors)
        if self.floors(tables) != batch.floors:
            raise StalePlan

    def raise_floor(self, table: str, lsn: Lsn) -> None:
        """Mark writes for `table` at or below `lsn` as stale (never lowers the floor)."""
        key = self.keys[table].floor(table)
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    current = pipe.get(key)
                    if current is not None and int(current) >= lsn.value:
                        return
                    pipe.multi()
                    pipe.set(key, str(lsn.value))
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue

    # ----------------------------------------------------------------- one function per write

    def _write_row(self, pipe: Any, row: RowWrite, stats: ApplyStats) -> None:
        if row.state.deleted:
            self._write_delete(pipe, row, stats)
        elif row.metadata_only:
            self._write_metadata(pipe, row, stats)
        else:
            self._write_chunks(pipe, row, stats)

    def _write_delete(self, pipe: Any, row: RowWrite, stats: ApplyStats) -> None:
        table, key = row.state.table.name, row.state.key
        keys = self.keys[table]
        self._delete_row(pipe, keys, table, key, row.old_count)
        ttl = self.settings.pipeline.tombstone_ttl_s
        pipe.set(keys.tomb(table, key), str(row.state.lsn.value), ex=ttl)
        stats.deleted += 1
        stats.chunks_deleted += row.old_count

    def _write_metadata(self, pipe: Any, row: RowWrite, stats: ApplyStats) -> None:
        table, key = row.state.table.name, row.state.key
        keys = self.keys[table]
        lsn = str(row.state.lsn.value)
        fields, nulls = _metadata(row.state)
        for n in range(row.old_count):
            chunk_key = keys.chunk(table, key, n)
            pipe.hset(chunk_key, mapping={**fields, "lsn": lsn})
            if nulls:
                pipe.hdel(chunk_key, *nulls)
        pipe.hset(keys.row(table, key), "lsn", lsn)
        stats.metadata_only += 1

    def _write_chunks(self, pipe: Any, row: RowWrite, stats: ApplyStats) -> None:
        table, key = row.state.table.name, row.state.key
        keys = self.keys[table]
        lsn = str(row.state.lsn.value)
        fields, _nulls = _metadata(row.state)
        for n, (chunk, vector) in enumerate(zip(row.chunks, row.vectors, strict=True)):
            chunk_key = keys.chunk(table, key, n)
            pipe.delete(chunk_key)
            pipe.hset(
                chunk_key,
                mapping={
                    "content": chunk, "embedding": vector or b"", "table": table, "pk": key,
                    "chunk": n, "lsn": lsn, **fields,
                },
            )  # fmt: skip
        for n in range(len(row.chunks), row.old_count):
            pipe.delete(keys.chunk(table, key, n))
        pipe.delete(keys.row(table, key), keys.tomb(table, key))
        pipe.hset(keys.row(table, key), mapping={"lsn": lsn, "hashes": ",".join(row.hashes)})
        stats.upserted += 1
        stats.chunks_written += len(row.chunks)
        stats.chunks_deleted += max(0, row.old_count - len(row.chunks))

    def _write_truncate(
        self, pipe: Any, table: str, lsn: Lsn, rows: list[tuple[str, int]], stats: ApplyStats
    ) -> None:
        keys = self.keys[table]
        for key, count in rows:
            self._delete_row(pipe, keys, table, key, count)
            stats.chunks_deleted += count
        stats.deleted += len(rows)
        pipe.set(keys.floor(table), str(lsn.value))

    def _write_dead_letters(
        self, pipe: Any, letters: list[tuple[RowChange, str]], lsn: Lsn, stats: ApplyStats
    ) -> None:
        for change, error in letters:
            index = self.keys.get(change.table)
            if index is None:
                continue
            log.warning("dead-lettered a row of %s: %s", change.table, error)
            pipe.xadd(
                index.deadletter,
                {
                    "table": change.table,
                    "op": change.op.value,
                    "lsn": str(lsn),
                    "error": error,
                    "row": _row_summary(change),
                },
                maxlen=self.settings.pipeline.deadletter_max,
                approximate=True,
            )
            stats.dead_letters += 1

    @staticmethod
    def _delete_row(pipe: Any, keys: Keyspace, table: str, key: str, chunks: int) -> None:
        """Delete a row's manifest and its `chunks` chunk keys."""
        for n in range(chunks):
            pipe.delete(keys.chunk(table, key, n))
        pipe.delete(keys.row(table, key))

    # ----------------------------------------------------------------- truncates and sweeps

    def _truncated_rows(
        self, truncated: Mapping[str, Lsn]
    ) -> dict[str, tuple[Lsn, list[tuple[str, int]]]]:
        """For each truncated table, the rows Redis holds for it now (key, chunk count)."""
        doomed: dict[str, tuple[Lsn, list[tuple[str, int]]]] = {}
        for table, lsn in truncated.items():
            keys = self.keys[table]
            done = self.client.get(keys.floor(table))
            if done is not None and Lsn(int(done)) >= lsn:
                continue  # a replayed TRUNCATE: already applied
            rows = self._scan_rows(keys, table)
            doomed[table] = (lsn, [(key, count) for key, count, at in rows if at < lsn])
        return doomed

    def _scan_rows(self, keys: Keyspace, table: str) -> Iterator[tuple[str, int, Lsn]]:
        """Every row Redis holds for `table`: (encoded key, chunk count, LSN)."""
        for row, (hashes, lsn) in scan_fields(
            self.client, keys.row_pattern(table), "hashes", "lsn"
        ):
            count = len(hashes.split(b",")) if hashes else 0
            yield keys.key_from_row(text(row), table), count, Lsn(int(lsn or 0))

    def sweep(self, tables: Iterable[TableInfo], older_than: Lsn) -> int:
        """Delete rows last written before `older_than` (after a resync copy: rows the tables no
        longer have). Returns how many rows were removed."""
        removed = 0
        for table in tables:
            keys = self.keys[table.name]
            stale = [key for key, _n, lsn in self._scan_rows(keys, table.name) if lsn < older_than]
            for start in range(0, len(stale), _SWEEP_BATCH):
                candidates = stale[start : start + _SWEEP_BATCH]
                removed += self._delete_stale(keys, table.name, candidates, older_than)
        return removed

    def _delete_stale(
        self, keys: Keyspace, table: str, candidates: list[str], older_than: Lsn
    ) -> int:
        """Delete the candidates still older than `older_than`, WATCHing them so a row the
        stream rewrites meanwhile is kept."""
        rows = [keys.row(table, key) for key in candidates]
        while True:
            with self.client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(*rows)  # type: ignore[no-untyped-call]
                    held = read_fields(self.client, rows, "hashes", "lsn")
                    doomed = [
                        (key, len(hashes.split(b",")) if hashes else 0)
                        for key, (_row, (hashes, lsn)) in zip(candidates, held, strict=True)
                        if lsn is not None and int(lsn) < older_than.value
                    ]
                    pipe.multi()
                    for key, count in doomed:
                        self._delete_row(pipe, keys, table, key, count)
                    pipe.execute()
                    return len(doomed)
                except redis.WatchError:
                    continue


def _lsn(raw: bytes | None) -> Lsn | None:
    return Lsn(int(raw)) if raw is not None else None


def _metadata(state: RowState) -> tuple[dict[str, Any], list[str]]:
    """Present metadata columns as hash fields; NULL ones are to be removed."""
    fields: dict[str, Any] = {}
    nulls: list[str] = []
    for column, kind in state.table.settings.metadata.items():
        value = state.values.get(column)
        if value is None:
            continue  # not in the change: unchanged
        converted = metadata_field(value, kind)
        if converted is None:
            nulls.append(column)
        else:
            fields[column] = converted
    return fields, nulls


def _row_summary(change: RowChange) -> str:
    row = change.new or change.old
    parts = [f"{k}={(v.text or '')[:80]!r}" for k, v in list(row.items())[:8]]
    return ", ".join(parts)

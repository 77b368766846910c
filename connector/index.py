"""The Redis side: index schema, the record of the embedding model, the checkpoint, and the
atomic write of a batch.

A batch is written in one MULTI/EXEC: chunk upserts, deletion of chunks a row no longer has,
row manifests, tombstones, truncates, and the checkpoint LSN. A query therefore sees a source
transaction all at once or not at all, and the checkpoint never says more than Redis holds.
Every key carries the LSN that wrote it; a write older than what a row (or its tombstone, or its
table's last truncate) already holds is skipped, so applying a change twice is harmless.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from connector.catalog import TableInfo
from connector.changes import Op, RowChange
from connector.chunking import Chunker, get_encoding
from connector.config import Settings, TableSettings
from connector.embeddings.base import Embedder
from connector.errors import (
    ConfigError,
    EmbeddingRejected,
    ModelMismatchError,
    RedisIndexError,
    ResyncNeeded,
)
from connector.keys import Keyspace, checkpoint_key
from connector.lsn import Lsn
from connector.pgtypes import TAG_SEPARATOR, metadata_field
from connector.redis_client import Fields, command, longer_timeout, scan_fields, text
from connector.reselect import Reselected
from connector.rows import BatchEffects, RowState

# Reads back content columns an UPDATE left out (see connector.reselect): fills the states in
# place and says which rows are gone and which could not be read.
Reselect = Callable[[Sequence[RowState]], Reselected]

log = logging.getLogger(__name__)

SCHEMA_VERSION = "2"
_MAX_ATTEMPTS = 20
RESERVED_FIELDS = frozenset({"content", "embedding", "table", "pk", "chunk", "lsn"})
_FIELD_ARGS = {
    "tag": ["TAG", "SEPARATOR", TAG_SEPARATOR, "CASESENSITIVE"],
    "numeric": ["NUMERIC"],
    "text": ["TEXT"],
}


def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


# --------------------------------------------------------------------------- schema


@dataclass(frozen=True, slots=True)
class IndexSpec:
    """One RediSearch index and the tables written under its prefix."""

    name: str
    fields: dict[str, str]  # metadata field -> tag | numeric | text
    tables: tuple[str, ...]

    @property
    def keys(self) -> Keyspace:
        return Keyspace(self.name)


def index_specs(tables: Iterable[TableSettings]) -> dict[str, IndexSpec]:
    """Group tables by index name; tables sharing an index share its metadata fields."""
    fields: dict[str, dict[str, str]] = {}
    members: dict[str, list[str]] = {}
    for table in tables:
        merged = fields.setdefault(table.index_name, {})
        members.setdefault(table.index_name, []).append(table.qualified_name)
        for column, kind in table.metadata.items():
            if column in RESERVED_FIELDS:
                raise ConfigError(
                    f"table {table.qualified_name}: metadata column {column!r} collides with a "
                    f"field the connector writes ({', '.join(sorted(RESERVED_FIELDS))}); "
                    "rename it in a view, or leave it out of metadata"
                )
            if merged.setdefault(column, kind) != kind:
                raise ConfigError(
                    f"index {table.index_name}: metadata field {column!r} is {merged[column]} for "
                    f"one table and {kind} for {table.qualified_name}; give them one type"
                )
    return {name: IndexSpec(name, fields[name], tuple(members[name])) for name in fields}


def _schema_args(spec: IndexSpec, dimensions: int) -> list[Any]:
    args: list[Any] = [
        "FT.CREATE", spec.name, "ON", "HASH", "PREFIX", "1", spec.keys.chunk_prefix,
        "SCHEMA",
        "content", "TEXT",
        "table", "TAG",
        "pk", "TAG", "SEPARATOR", "\x1f",
        "chunk", "NUMERIC",
    ]  # fmt: skip
    for column, kind in spec.fields.items():
        args += [column, *_FIELD_ARGS[kind]]
    args += [
        "embedding", "VECTOR", "HNSW", "6",
        "TYPE", "FLOAT32", "DIM", str(dimensions), "DISTANCE_METRIC", "COSINE",
    ]  # fmt: skip
    return args


def ensure_index(client: redis.Redis, spec: IndexSpec, embedder: Embedder) -> None:
    """Create the index if it does not exist, and make sure it was built with this model."""
    meta = {text(k): text(v) for k, v in client.hgetall(spec.keys.meta).items()}
    expected = embedding_meta(embedder)
    if meta:
        check_meta(spec.name, meta, expected)
    try:
        command(client, "FT.INFO", spec.name)
    except redis.ResponseError:
        command(client, *_schema_args(spec, embedder.dimensions))
        log.info("created index %s (%d dimensions)", spec.name, embedder.dimensions)
    fields: Fields = {}
    fields.update(expected)
    client.hset(spec.keys.meta, mapping=fields)


def embedding_meta(embedder: Embedder) -> dict[str, str]:
    return {
        "provider": embedder.provider,
        "model": embedder.model,
        "dimensions": str(embedder.dimensions),
        "schema_version": SCHEMA_VERSION,
    }


def check_meta(index: str, meta: Mapping[str, str], expected: Mapping[str, str]) -> None:
    for name in ("provider", "model", "dimensions"):
        if meta.get(name) != expected[name]:
            raise ModelMismatchError(
                f"index {index} was built with {meta.get('provider')}/{meta.get('model')} "
                f"({meta.get('dimensions')} dimensions) but the settings say "
                f"{expected['provider']}/{expected['model']} ({expected['dimensions']} "
                "dimensions): set [embedding] back, or drop the index and resync"
            )


# --------------------------------------------------------------------------- checkpoint


@dataclass(frozen=True, slots=True)
class Checkpoint:
    lsn: Lsn
    system_id: str
    updated_at: float
    commit_time: float | None = None


def read_checkpoint(client: redis.Redis, slot: str) -> Checkpoint | None:
    raw = client.hgetall(checkpoint_key(slot))
    if not raw:
        return None
    data = {text(k): text(v) for k, v in raw.items()}
    commit_time = float(data["commit_time"]) if data.get("commit_time") else None
    return Checkpoint(
        Lsn.parse(data["lsn"]),
        data.get("system_id", ""),
        float(data.get("updated_at", 0)),
        commit_time,
    )


def _checkpoint_mapping(lsn: Lsn, system_id: str, commit_time: float | None = None) -> Fields:
    fields: Fields = {"lsn": str(lsn), "system_id": system_id, "updated_at": f"{time.time():.6f}"}
    if commit_time is not None:
        fields["commit_time"] = f"{commit_time:.6f}"
    return fields


# --------------------------------------------------------------------------- the batch write


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


@dataclass(slots=True)
class _Manifest:
    lsn: Lsn
    hashes: list[str]

    @classmethod
    def parse(cls, raw: Mapping[bytes, bytes]) -> _Manifest | None:
        if not raw:
            return None
        hashes = raw.get(b"hashes", b"").decode()
        return cls(Lsn(int(raw[b"lsn"])), hashes.split(",") if hashes else [])


@dataclass(slots=True)
class _Plan:
    """What the write will do for one row."""

    state: RowState
    old: _Manifest | None
    chunks: list[str] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)
    vectors: list[bytes | None] = field(default_factory=list)
    metadata_only: bool = False


class IndexWriter:
    """Applies batches of row states to Redis for every configured index."""

    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        embedder: Embedder,
        system_id: str = "",
        reselect: Reselect | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.embedder = embedder
        self.system_id = system_id
        self.specs = index_specs(settings.tables)
        self._keys = {t.qualified_name: Keyspace(t.index_name) for t in settings.tables}
        encoding = get_encoding(settings.embedding.model)
        self._chunkers = {
            t.qualified_name: Chunker(encoding, t.chunk_tokens, t.chunk_overlap)
            for t in settings.tables
        }
        self.stats = ApplyStats()
        self.reselect = reselect
        # Vectors of the batch being written, kept until it is written: a write Redis refused
        # (maxmemory) is planned again without paying the provider again.
        self._vectors: dict[str, bytes] = {}
        self._checkpoint_key = checkpoint_key(settings.postgres.slot)
        # Set once this writer has written or resumed from a checkpoint: from then on a missing
        # checkpoint means Redis lost data.
        self.expect_checkpoint = False

    def ensure_indexes(self) -> None:
        for spec in self.specs.values():
            ensure_index(self.client, spec, self.embedder)

    def write_checkpoint(self, lsn: Lsn, commit_time: float | None = None) -> None:
        """Move the checkpoint alone (a batch of transactions that touched no configured row)."""
        self.apply(BatchEffects(last_lsn=lsn), lsn, commit_time)
        self.expect_checkpoint = True

    # ----------------------------------------------------------------- apply

    def apply(
        self, effects: BatchEffects, checkpoint: Lsn | None, commit_time: float | None = None
    ) -> ApplyStats:
        """Write the batch atomically, with `checkpoint` (None during a snapshot copy: the
        checkpoint is written once the whole copy is in).

        The row keys (and the checkpoint) are WATCHed from the first read to the write: if
        anyone else changes them meanwhile (a resync in another process, a FLUSHALL), the write
        is abandoned and planned again, so an older change never overwrites a newer one."""
        for _attempt in range(_MAX_ATTEMPTS):
            try:
                stats = self._apply_once(effects, checkpoint, commit_time)
            except redis.WatchError as exc:
                cause = exc.__context__
                if isinstance(cause, redis.ConnectionError | redis.TimeoutError):
                    raise cause from None  # the connection failed, no other writer raced
                self._check_checkpoint()
                log.debug("batch at %s raced another writer; planning it again", checkpoint)
                continue
            self._vectors.clear()
            return stats
        raise RedisIndexError(
            f"could not write the batch ending at {effects.last_lsn}: its keys kept changing "
            f"under another writer {_MAX_ATTEMPTS} times (two connectors on one index?)"
        )

    def _check_checkpoint(self) -> None:
        """Raise ResyncNeeded when Redis lost the checkpoint this writer relies on."""
        if self.expect_checkpoint and not self.client.exists(self._checkpoint_key):
            raise ResyncNeeded(
                f"Redis lost the checkpoint of slot {self.settings.postgres.slot} (FLUSHALL, "
                "restart without persistence, or eviction): resynchronising from a snapshot"
            )

    def _apply_once(
        self, effects: BatchEffects, checkpoint: Lsn | None, commit_time: float | None
    ) -> ApplyStats:
        stats = ApplyStats()
        letters = list(effects.skipped)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.watch(*self._watched(effects, checkpoint is not None))  # type: ignore[no-untyped-call]
            self._check_checkpoint()
            plans = self._plan(effects, self._read_floors(effects), stats, letters)
            refused = self._embed(plans, stats)
            if refused:  # the provider refused their text: dead-letter them, write the others
                letters += [
                    (_as_change(p.state), refused[id(p)]) for p in plans if id(p) in refused
                ]
                plans = [plan for plan in plans if id(plan) not in refused]
            doomed = self._truncated_rows(effects)
            pipe.multi()
            for table, (lsn, rows) in doomed.items():
                self._write_truncate(pipe, table, lsn, rows, stats)
            for plan in plans:
                self._write_plan(pipe, plan, stats)
            self._write_dead_letters(pipe, letters, effects.last_lsn, stats)
            if checkpoint is not None:
                mapping = _checkpoint_mapping(checkpoint, self.system_id, commit_time)
                pipe.hset(self._checkpoint_key, mapping=mapping)
            with longer_timeout(pipe, self.settings.redis.write_timeout_s):
                pipe.execute()
        self._add_stats(stats)
        return stats

    def _watched(self, effects: BatchEffects, with_checkpoint: bool) -> list[str]:
        keys = [self._checkpoint_key] if with_checkpoint else []
        for state in effects.rows.values():
            space = self._keys[state.table.name]
            keys += [
                space.row(state.table.name, state.key),
                space.tomb(state.table.name, state.key),
            ]
        for table in {*effects.truncated, *(s.table.name for s in effects.rows.values())}:
            keys.append(self._keys[table].floor(table))
        return keys or [self._checkpoint_key]

    def _add_stats(self, stats: ApplyStats) -> None:
        for name in ApplyStats.__slots__:
            setattr(self.stats, name, getattr(self.stats, name) + getattr(stats, name))

    def _read_floors(self, effects: BatchEffects) -> dict[str, Lsn]:
        tables = sorted({state.table.name for state in effects.rows.values()})
        if not tables:
            return {}
        values = self.client.mget([self._keys[t].floor(t) for t in tables])
        return {t: Lsn(int(v)) for t, v in zip(tables, values, strict=True) if v is not None}

    def raise_floor(self, table: str, lsn: Lsn) -> None:
        """Mark writes for `table` at or below `lsn` as stale (never lowers the floor)."""
        key = self._keys[table].floor(table)
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

    def _plan(
        self,
        effects: BatchEffects,
        floors: Mapping[str, Lsn],
        stats: ApplyStats,
        letters: list[tuple[RowChange, str]],
    ) -> list[_Plan]:
        states = list(effects.rows.values())
        pipe = self.client.pipeline(transaction=False)
        for state in states:
            keys = self._keys[state.table.name]
            pipe.hgetall(keys.row(state.table.name, state.key))
            pipe.get(keys.tomb(state.table.name, state.key))
        replies = pipe.execute()
        current: list[tuple[RowState, _Manifest | None]] = []
        for i, state in enumerate(states):
            manifest = _Manifest.parse(replies[2 * i])
            tomb = Lsn(int(replies[2 * i + 1])) if replies[2 * i + 1] is not None else None
            marks = (manifest and manifest.lsn, tomb, floors.get(state.table.name))
            newest = max((m for m in marks if m), default=None)
            if newest is not None and newest >= state.lsn:
                stats.skipped_stale += 1
                continue
            current.append((state, manifest))
        reread = self._reselect([s for s, m in current if _needs_reselect(s, m)], stats)
        plans = []
        for state, manifest in current:
            ident = (state.table.name, state.key)
            if ident in reread.gone:
                stats.skipped_stale += 1  # deleted or re-keyed later: that change follows
                continue
            if ident in reread.errors:
                letters.append((_as_change(state), reread.errors[ident]))
                continue
            plan = self._plan_row(state, manifest, letters)
            if plan is not None:
                plans.append(plan)
        return plans

    def _reselect(self, states: list[RowState], stats: ApplyStats) -> Reselected:
        if not states or self.reselect is None:
            return Reselected()
        found = self.reselect(states)
        stats.reselected += found.filled
        return found

    def _plan_row(
        self, state: RowState, manifest: _Manifest | None, letters: list[tuple[RowChange, str]]
    ) -> _Plan | None:
        plan = _Plan(state, manifest)
        if state.deleted:
            return plan
        missing = state.missing_content
        if missing and not _needs_reselect(state, manifest) and not state.inserted:
            plan.metadata_only = True  # no content column changed: keep chunks and vectors
            return plan
        if missing:
            letters.append((_as_change(state), _missing_columns_error(state, missing)))
            return None
        plan.chunks = self._chunkers[state.table.name].chunk(state.text())
        plan.hashes = [text_hash(chunk) for chunk in plan.chunks]
        if not plan.chunks:
            log.warning(
                "row %s of %s has no text to index (content NULL, empty or blank): it is kept "
                "out of search results",
                state.key,
                state.table.name,
                extra={"table": state.table.name, "lsn": str(state.lsn)},
            )
        return plan

    def _embed(self, plans: list[_Plan], stats: ApplyStats) -> dict[int, str]:
        """Embed only chunk texts the row did not already have; reuse the stored vectors.
        Returns the plans (by id) whose text the provider refused, with its error."""
        reuse: list[tuple[_Plan, int, str]] = []
        todo: dict[str, list[tuple[_Plan, int]]] = {}
        for plan in plans:
            plan.vectors = [None] * len(plan.chunks)
            old = {h: n for n, h in enumerate(plan.old.hashes)} if plan.old else {}
            table, key = plan.state.table.name, plan.state.key
            for n, (chunk, digest) in enumerate(zip(plan.chunks, plan.hashes, strict=True)):
                if digest in old:
                    reuse.append((plan, n, self._keys[table].chunk(table, key, old[digest])))
                else:
                    todo.setdefault(chunk, []).append((plan, n))
        self._reuse_vectors(reuse, todo)
        self._reuse_memo(todo)
        if not todo:
            return {}
        texts = list(todo)
        vectors, failed = self._embed_texts(texts, todo)
        for chunk, vector in zip(texts, vectors, strict=True):
            if vector is not None:
                self._vectors[chunk] = vector
            for plan, n in todo[chunk]:
                plan.vectors[n] = vector
        stats.chunks_embedded += len(texts) - len(failed)
        return failed

    def _embed_texts(
        self, texts: list[str], todo: dict[str, list[tuple[_Plan, int]]]
    ) -> tuple[list[bytes | None], dict[int, str]]:
        """The provider's vectors for `texts`, and the plans (by id) whose text it refused."""
        try:
            return list(self.embedder.embed(texts)), {}
        except EmbeddingRejected as exc:
            failed = {
                id(plan): error for i, error in exc.errors.items() for plan, _n in todo[texts[i]]
            }
            return exc.vectors, failed

    def _reuse_memo(self, todo: dict[str, list[tuple[_Plan, int]]]) -> None:
        """Vectors an earlier attempt at this batch already paid for (Redis refused it)."""
        for chunk in [c for c in todo if c in self._vectors]:
            for plan, n in todo.pop(chunk):
                plan.vectors[n] = self._vectors[chunk]

    def _reuse_vectors(
        self, reuse: list[tuple[_Plan, int, str]], todo: dict[str, list[tuple[_Plan, int]]]
    ) -> None:
        """Fetch stored vectors of unchanged chunk texts; any that are gone join `todo`."""
        if not reuse:
            return
        pipe = self.client.pipeline(transaction=False)
        for _plan, _n, key in reuse:
            pipe.hget(key, "embedding")
        for (plan, n, _key), vector in zip(reuse, pipe.execute(), strict=True):
            if vector is None:  # the old chunk is gone (removed by hand?): embed again
                todo.setdefault(plan.chunks[n], []).append((plan, n))
            else:
                plan.vectors[n] = vector

    # ----------------------------------------------------------------- write helpers

    def _metadata(self, state: RowState) -> tuple[dict[str, Any], list[str]]:
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

    def _write_plan(self, pipe: Any, plan: _Plan, stats: ApplyStats) -> None:
        state = plan.state
        table, key = state.table.name, state.key
        keys = self._keys[table]
        old_count = len(plan.old.hashes) if plan.old else 0
        lsn = str(state.lsn.value)
        if state.deleted:
            for n in range(old_count):
                pipe.delete(keys.chunk(table, key, n))
            pipe.delete(keys.row(table, key))
            pipe.set(keys.tomb(table, key), lsn, ex=self.settings.pipeline.tombstone_ttl_s)
            stats.deleted += 1
            stats.chunks_deleted += old_count
            return
        fields, nulls = self._metadata(state)
        if plan.metadata_only:
            for n in range(old_count):
                chunk_key = keys.chunk(table, key, n)
                pipe.hset(chunk_key, mapping={**fields, "lsn": lsn})
                if nulls:
                    pipe.hdel(chunk_key, *nulls)
            pipe.hset(keys.row(table, key), "lsn", lsn)
            stats.metadata_only += 1
            return
        for n, (chunk, vector) in enumerate(zip(plan.chunks, plan.vectors, strict=True)):
            chunk_key = keys.chunk(table, key, n)
            pipe.delete(chunk_key)
            pipe.hset(
                chunk_key,
                mapping={
                    "content": chunk, "embedding": vector or b"", "table": table, "pk": key,
                    "chunk": n, "lsn": lsn, **fields,
                },
            )  # fmt: skip
        for n in range(len(plan.chunks), old_count):
            pipe.delete(keys.chunk(table, key, n))
        pipe.delete(keys.row(table, key), keys.tomb(table, key))
        pipe.hset(keys.row(table, key), mapping={"lsn": lsn, "hashes": ",".join(plan.hashes)})
        stats.upserted += 1
        stats.chunks_written += len(plan.chunks)
        stats.chunks_deleted += max(0, old_count - len(plan.chunks))

    def _truncated_rows(
        self, effects: BatchEffects
    ) -> dict[str, tuple[Lsn, list[tuple[str, int]]]]:
        """For each truncated table, the rows Redis holds for it now (key, chunk count)."""
        doomed: dict[str, tuple[Lsn, list[tuple[str, int]]]] = {}
        for table, lsn in effects.truncated.items():
            keys = self._keys[table]
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
            keys = self._keys[table.name]
            stale = [key for key, _n, lsn in self._scan_rows(keys, table.name) if lsn < older_than]
            for start in range(0, len(stale), 500):
                removed += self._delete_stale(
                    keys, table.name, stale[start : start + 500], older_than
                )
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
                    read = self.client.pipeline(transaction=False)
                    for row in rows:
                        read.hmget(row, "hashes", "lsn")
                    doomed = [
                        (key, len(hashes.split(b",")) if hashes else 0)
                        for key, (hashes, lsn) in zip(candidates, read.execute(), strict=True)
                        if lsn is not None and int(lsn) < older_than.value
                    ]
                    pipe.multi()
                    for key, count in doomed:
                        for n in range(count):
                            pipe.delete(keys.chunk(table, key, n))
                        pipe.delete(keys.row(table, key))
                    pipe.execute()
                    return len(doomed)
                except redis.WatchError:
                    continue

    def _write_truncate(
        self, pipe: Any, table: str, lsn: Lsn, rows: list[tuple[str, int]], stats: ApplyStats
    ) -> None:
        keys = self._keys[table]
        for key, count in rows:
            for n in range(count):
                pipe.delete(keys.chunk(table, key, n))
            pipe.delete(keys.row(table, key))
            stats.chunks_deleted += count
        stats.deleted += len(rows)
        pipe.set(keys.floor(table), str(lsn.value))

    def _write_dead_letters(
        self, pipe: Any, letters: list[tuple[RowChange, str]], lsn: Lsn, stats: ApplyStats
    ) -> None:
        for change, error in letters:
            index = self._keys.get(change.table)
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


def _needs_reselect(state: RowState, manifest: _Manifest | None) -> bool:
    """An UPDATE that left out content columns whose text is not known: some of them changed
    (so the text must be rebuilt), or the index has no chunks of the row to keep."""
    if state.deleted or state.inserted or not state.missing_content:
        return False
    every = len(state.missing_content) == len(state.table.settings.content)
    return not every or manifest is None


def _missing_columns_error(state: RowState, missing: list[str]) -> str:
    columns = ", ".join(missing)
    if state.inserted:
        return (
            f"table {state.table.name}: the INSERT has no column {columns}: was it dropped or "
            "renamed? Fix [[tables]] content (then `connector resync`)"
        )
    return (
        f"table {state.table.name}: the UPDATE left out content column(s) {columns} (unchanged "
        "TOASTed values, or dropped/renamed columns) and their text is not known: run ALTER "
        f"TABLE {state.table.name} REPLICA IDENTITY FULL so updates carry it"
    )


def _as_change(state: RowState) -> RowChange:
    return RowChange(Op.UPDATE, state.table.name, new=state.values)


def _row_summary(change: RowChange) -> str:
    row = change.new or change.old
    parts = [f"{k}={(v.text or '')[:80]!r}" for k, v in list(row.items())[:8]]
    return ", ".join(parts)

"""Planning a batch: from row states to finished writes (new row versions), before staging.

For each row it reads the row's manifest and its table's truncate floors, and skips a change
that a visible version (or floor) already covers. Pending versions at or after the change are
leftovers of an earlier attempt (a restart staging the same transaction again, or the same row
earlier in one large transaction): the new version replaces them. It reads back columns an
UPDATE left out (TOAST, see source.reselect), cuts the text into chunks, and gives each chunk
its content-addressed id: a chunk whose text (and the row's metadata) did not change keeps the
id of the version it came from and is not written again. New chunks reuse any stored vector of
the same text; only the rest is embedded. Rows the provider refuses, or whose text cannot be
known, become dead letters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from connector.config import Settings, VectorType
from connector.core.changes import Op, RowChange
from connector.core.chunking import Chunker, text_hash
from connector.core.lsn import Lsn
from connector.core.rows import BatchEffects, RowState
from connector.core.vectors import encode
from connector.core.versions import (
    Manifest,
    Version,
    assign_ids,
    id_text_hash,
    metadata_fingerprint,
)
from connector.embed.base import Embedder
from connector.embed.tokenizer import get_encoding
from connector.errors import EmbeddingRejected
from connector.sink.writer import ApplyStats, BatchWrite, IndexWriter, NewChunk, RowWrite
from connector.source.reselect import Reselected

# Reads back columns an UPDATE left out (see source.reselect): fills the states in place and
# says which rows are gone and which could not be read.
Reselect = Callable[[Sequence[RowState]], Reselected]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Row:
    """A row being planned: its change, its manifest, and what the new version builds on."""

    state: RowState
    manifest: Manifest
    base: Version | None  # the newest version at or before the change: what it follows
    replaces: list[Version]  # pending versions at or after the change


class Planner:
    """Plans batches for `writer`'s indexes, embedding with `embedder`."""

    def __init__(
        self,
        writer: IndexWriter,
        settings: Settings,
        embedder: Embedder,
        reselect: Reselect | None = None,
    ) -> None:
        self.writer = writer
        self.embedder = embedder
        self.reselect = reselect
        encoding = get_encoding(settings.embedding.model)
        self._chunkers = {
            t.qualified_name: Chunker(encoding, t.chunk_tokens, t.chunk_overlap)
            for t in settings.tables
        }
        self._types = {t.qualified_name: t.vector.type for t in settings.tables}

    def plan(self, effects: BatchEffects, visible: Lsn) -> BatchWrite:
        """The writes of `effects` for readers now at `visible`."""
        states = list(effects.rows.values())
        manifests = self.writer.manifests([(s.table.name, s.key) for s in states])
        floors = self.writer.floors(s.table.name for s in states)
        batch = BatchWrite(
            rows=[],
            truncated=dict(effects.truncated),
            letters=list(effects.skipped),
            last_lsn=effects.last_lsn,
        )
        rows = []
        for state, manifest in zip(states, manifests, strict=True):
            row = _follow(state, manifest, visible)
            if row is None or any(state.lsn < f for f in floors.get(state.table.name, [])):
                batch.stats.skipped_stale += 1
            else:
                rows.append(row)
        reread = self._reselect([r.state for r in rows if _needs_reselect(r)], batch.stats)
        for row in rows:
            ident = (row.state.table.name, row.state.key)
            if ident in reread.gone:
                batch.stats.skipped_stale += 1  # deleted or re-keyed later: that change follows
            elif ident in reread.errors:
                batch.letters.append((_as_change(row.state), reread.errors[ident]))
            else:
                write = self._plan_row(row, batch.letters)
                if write is not None:
                    batch.rows.append(write)
        self._mend(batch)
        self._embed(batch)
        return batch

    def _mend(self, batch: BatchWrite) -> None:
        """A copy from a snapshot (resync, `verify --repair`) keeps unchanged chunks (no second
        vector of the same text in HNSW), but rewrites any a hand or an eviction damaged."""
        kept = [(row, chunk) for row in batch.rows for chunk in row.kept]
        if not kept:
            return
        stored = self.writer.chunk_fields(
            [(r.state.table.name, r.state.key, c.id) for r, c in kept], "content"
        )
        for (row, chunk), (content,) in zip(kept, stored, strict=True):
            if content is None or text_hash(content.decode()) != id_text_hash(chunk.id):
                row.chunks.append(chunk)

    def _reselect(self, states: list[RowState], stats: ApplyStats) -> Reselected:
        if not states or self.reselect is None:
            return Reselected()
        found = self.reselect(states)
        stats.reselected += found.filled
        return found

    def _plan_row(self, row: _Row, letters: list[tuple[RowChange, str]]) -> RowWrite | None:
        state = row.state
        if state.deleted:
            return _write(row, Version(state.lsn, deleted=True), [], {})
        metadata = state.metadata_fields()
        meta = metadata_fingerprint(metadata)
        base = row.base if row.base is not None and not row.base.deleted else None
        if state.missing_content:
            if (
                base is None
                or state.inserted
                or len(state.missing_content) < len(state.table.settings.content)
            ):
                letters.append((_as_change(state), _missing_columns_error(state)))
                return None
            return self._plan_metadata(row, base, metadata, meta)
        texts = self._chunkers[state.table.name].chunk(state.text())
        if not texts:
            log.warning(
                "row %s of %s has no text to index (content NULL, empty or blank): it is kept "
                "out of search results",
                state.key,
                state.table.name,
                extra={"table": state.table.name, "lsn": str(state.lsn)},
            )
        keep = base if base is not None and base.meta == meta else None
        ids = assign_ids([text_hash(t) for t in texts], state.lsn, keep)
        version = Version(state.lsn, ids, meta=meta)
        if keep is not None and ids == keep.chunks and not row.replaces and not state.inserted:
            # Nothing the index holds changed (an update of other columns). A copy from a
            # snapshot (inserts) always writes its version: its table's floor is raised after.
            return None
        kept = set(keep.chunks) if keep else set()
        new = [NewChunk(c, t, None, n) for n, (c, t) in enumerate(zip(ids, texts, strict=True))]
        write = _write(row, version, [c for c in new if c.id not in kept], metadata)
        if state.inserted:  # a copy: chunks it keeps are checked, and rewritten if damaged
            write.kept = [c for c in new if c.id in kept]
        return write

    def _plan_metadata(
        self, row: _Row, base: Version, metadata: dict[str, str | float], meta: str
    ) -> RowWrite | None:
        """An UPDATE that changed no content column: the base's texts and vectors, with the new
        metadata in new chunk hashes (nothing when the metadata did not change either)."""
        if meta == base.meta and not row.replaces:
            return None
        table, key = row.state.table.name, row.state.key
        stored = self.writer.chunk_fields(
            [(table, key, c) for c in base.chunks], "content", "embedding"
        )
        texts = [(content or b"").decode() for content, _vector in stored]
        ids = assign_ids([id_text_hash(c) for c in base.chunks], row.state.lsn, None)
        chunks = [
            NewChunk(c, t, vector, n)
            for n, (c, t, (_content, vector)) in enumerate(zip(ids, texts, stored, strict=True))
        ]
        return _write(row, Version(row.state.lsn, ids, meta=meta), chunks, metadata)

    # ----------------------------------------------------------------- vectors

    def _embed(self, batch: BatchWrite) -> None:
        """Fill every new chunk's vector: a stored one of the same text, or the provider's.
        Rows whose text the provider refused leave the batch as dead letters."""
        todo: dict[str, list[tuple[NewChunk, VectorType]]] = {}
        self._reuse_stored(batch.rows, todo)
        if not todo:
            return
        texts = list(todo)
        vectors, refused = self._embed_texts(texts)
        for text, vector in zip(texts, vectors, strict=True):
            for chunk, kind in todo[text]:  # the provider's FLOAT32, in the index's type
                chunk.vector = encode(vector, kind) if vector is not None else None
        batch.stats.chunks_embedded += len(texts) - len(refused)
        failed_texts = {texts[i]: error for i, error in refused.items()}
        if failed_texts:  # the provider refused their text: dead-letter them, stage the others
            kept = []
            for row in batch.rows:
                errors = [failed_texts[c.text] for c in row.chunks if c.text in failed_texts]
                error = errors[0] if errors else None
                if error is None:
                    kept.append(row)
                else:
                    batch.letters.append((_as_change(row.state), error))
            batch.rows = kept

    def _reuse_stored(
        self, rows: list[RowWrite], todo: dict[str, list[tuple[NewChunk, VectorType]]]
    ) -> None:
        """Take stored vectors of texts a row's versions already have; the rest join `todo`."""
        reuse: list[tuple[NewChunk, tuple[str, str, str]]] = []
        for row in rows:
            table, key = row.state.table.name, row.state.key
            kind = self._types[table]
            stored = {id_text_hash(c): c for v in row.known for c in v.chunks}
            for chunk in row.chunks:
                if chunk.vector is not None:
                    continue
                old = stored.get(id_text_hash(chunk.id))
                if old is not None and old != chunk.id:
                    reuse.append((chunk, (table, key, old)))
                else:
                    todo.setdefault(chunk.text, []).append((chunk, kind))
        if not reuse:
            return
        found = self.writer.chunk_fields([where for _chunk, where in reuse], "embedding")
        for (chunk, where), (vector,) in zip(reuse, found, strict=True):
            if vector:
                chunk.vector = vector
            else:  # the old chunk is gone (collected, or removed by hand): embed again
                todo.setdefault(chunk.text, []).append((chunk, self._types[where[0]]))

    def _embed_texts(self, texts: list[str]) -> tuple[list[bytes | None], dict[int, str]]:
        """The provider's vectors for `texts`, and the errors of the texts it refused."""
        try:
            return list(self.embedder.embed(texts)), {}
        except EmbeddingRejected as exc:
            return exc.vectors, exc.errors


def _follow(state: RowState, manifest: Manifest, visible: Lsn) -> _Row | None:
    """What the change builds on, or None when a visible version already covers it."""
    seen = manifest.at(visible)
    if seen is not None and seen.lsn >= state.lsn:
        return None
    replaces = [v for v in manifest.pending(visible) if v.lsn >= state.lsn]
    # The newest version at or before the change. One at the change's own LSN is an earlier
    # piece of the same large transaction (or the same transaction staged before a crash): the
    # change follows it, and replaces it.
    base = next((v for v in manifest.versions if v.lsn <= state.lsn), None)
    return _Row(state, manifest, base, replaces)


def _write(
    row: _Row, version: Version, chunks: list[NewChunk], metadata: dict[str, str | float]
) -> RowWrite:
    known = list(row.manifest.versions)
    return RowWrite(row.state, version, chunks, dict(metadata), row.replaces, known)


def _needs_reselect(row: _Row) -> bool:
    """An UPDATE that left out columns whose value is not known: metadata, or some content
    columns (the text must be rebuilt), or all of them while the index holds no text to keep."""
    state = row.state
    if state.deleted or state.inserted:
        return False
    if state.missing_metadata:
        return True
    missing = state.missing_content
    if not missing:
        return False
    has_text = row.base is not None and not row.base.deleted
    return len(missing) < len(state.table.settings.content) or not has_text


def _missing_columns_error(state: RowState) -> str:
    columns = ", ".join(state.missing_content)
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

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
from dataclasses import dataclass, replace

from connector.config import Settings, VectorType
from connector.core.changes import Op, RowChange
from connector.core.chunking import TRUNCATED_FIELD, Chunker, text_hash
from connector.core.fulltext import ORIGINAL_FIELD, content_fields, readable
from connector.core.lsn import Lsn
from connector.core.rows import BatchEffects, RowState
from connector.core.tables import TableInfo, gone_columns
from connector.core.vectors import convert, encode
from connector.core.versions import (
    Manifest,
    Version,
    assign_ids,
    floor_at,
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


@dataclass(frozen=True, slots=True)
class Donor:
    """The index a rebuild with the same model replaces: its vectors are taken, not embedded."""

    writer: IndexWriter
    types: dict[str, VectorType]  # table -> the donor's vector type


class Planner:
    """Plans batches for `writer`'s indexes (the tables of `settings`; rows of other tables
    are left out), embedding with `embedder`."""

    def __init__(
        self,
        writer: IndexWriter,
        settings: Settings,
        embedder: Embedder,
        reselect: Reselect | None = None,
        donor: Donor | None = None,
        dead_letters: bool = True,
    ) -> None:
        self.writer = writer
        self.embedder = embedder
        self.reselect = reselect
        self.donor = donor
        self.dead_letters = dead_letters  # a rebuild's index leaves them to the current one
        encoding = get_encoding(settings.embedding.model)
        self._tables = {t.qualified_name: t for t in settings.tables}
        self._chunkers = {
            t.qualified_name: Chunker(
                encoding, t.chunk_tokens, t.chunk_overlap, t.max_content_tokens
            )
            for t in settings.tables
        }
        self._types = {t.qualified_name: t.vector.type for t in settings.tables}
        self._bound: dict[str, TableInfo] = {}

    def plan(self, effects: BatchEffects, visible: Lsn) -> BatchWrite:
        """The writes of `effects` for readers now at `visible`."""
        changed = [*effects.rows.values(), *self._leaf_deletes(effects)]
        states = [self._bind(s) for s in changed if s.table.name in self._tables]
        manifests = self.writer.manifests([(s.table.name, s.key) for s in states])
        floors = self.writer.floors(s.table.name for s in states)
        for table, lsn in effects.truncated.items():  # this batch's own, not staged yet
            floors.setdefault(table, []).append(lsn)
        batch = BatchWrite(
            rows=[],
            truncated={t: lsn for t, lsn in effects.truncated.items() if t in self._tables},
            # Not in a replay: the rows at the truncate's LSN are then its visible new ones.
            truncated_staged={
                t
                for t in effects.truncated_staged
                if t in self._tables and effects.truncated[t] > visible
            },
            letters=list(effects.skipped) if self.dead_letters else [],
            last_lsn=effects.last_lsn,
        )
        rows = []
        for state, manifest in zip(states, manifests, strict=True):
            cuts = floors.get(state.table.name, [])
            row = _builds_on(state, manifest, visible, floor_at(cuts, state.lsn))
            if row is None or any(state.lsn < f for f in cuts):
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

    def _leaf_deletes(self, effects: BatchEffects) -> list[RowState]:
        """The rows Redis holds in a partition truncated alone, deleted at the truncate's LSN
        (rows the batch itself wrote after the truncate are in `effects.rows` already)."""
        deletes = []
        for (table, leaf), cut in effects.truncated_leaves.items():
            if table not in self._tables:
                continue
            for key in self.writer.rows_in_leaf(table, leaf):
                if (table, key) not in effects.rows:
                    deletes.append(RowState(cut.table, key, cut.lsn, deleted=True, leaf=leaf))
        return deletes

    def _bind(self, state: RowState) -> RowState:
        """The row read with this index's settings of its table (a rebuild's may differ)."""
        wanted = self._tables[state.table.name]
        if state.table.settings is wanted:
            return state
        bound = self._bound.get(state.table.name)
        if bound is None or bound.key != state.table.key:
            bound = self._bound[state.table.name] = replace(state.table, settings=wanted)
        return replace(state, table=bound)

    def _mend(self, batch: BatchWrite) -> None:
        """A copy from a snapshot (resync, `verify --repair`) keeps unchanged chunks (no second
        vector of the same text in HNSW), but rewrites any a hand or an eviction damaged, and
        any whose text is right but not indexed as `fulltext` has it (its vector is kept)."""
        kept = [(row, chunk) for row in batch.rows for chunk in row.kept]
        if not kept:
            return
        where = [(r.state.table.name, r.state.key, c.id) for r, c in kept]
        stored = self.writer.chunk_fields(where, "content", ORIGINAL_FIELD)
        renormalise = []
        for (row, chunk), place, (content, original) in zip(kept, where, stored, strict=True):
            if content is not None and _stored_fields(content, original) == content_fields(
                chunk.text
            ):
                continue  # intact
            row.chunks.append(chunk)
            written = _readable(content, original) if content is not None else None
            if written is not None and text_hash(written) == id_text_hash(chunk.id):
                renormalise.append((chunk, place))
        vectors = self.writer.chunk_fields([place for _c, place in renormalise], "embedding")
        for (chunk, _place), (vector,) in zip(renormalise, vectors, strict=True):
            chunk.vector = vector or None

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
        if state.inserted and (state.missing_content or state.missing_metadata):
            # An INSERT carries every column: the ones it lacks are gone (as an UPDATE's
            # read-back finds them), and a row is never indexed without its metadata.
            missing = [*state.missing_content, *state.missing_metadata]
            letters.append((_as_change(state), gone_columns(state.table, "INSERT", missing)))
            return None
        metadata = state.metadata_fields()
        base = row.base if row.base is not None and not row.base.deleted else None
        if state.missing_content:
            if base is None or len(state.missing_content) < len(state.table.settings.content):
                letters.append((_as_change(state), _missing_columns_error(state)))
                return None
            return self._plan_metadata(row, base, metadata)
        texts = self._chunks(state, metadata, letters)
        if texts is None:
            return None
        meta = metadata_fingerprint(metadata)
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

    def _chunks(
        self,
        state: RowState,
        metadata: dict[str, str | float],
        letters: list[tuple[RowChange, str]],
    ) -> list[str] | None:
        """The row's chunk texts, within the table's `max_content_tokens`: a longer text is
        cut (and `metadata` marked) or dead-lettered (None), as `over_max_content` says."""
        settings = state.table.settings
        chunker = self._chunkers[state.table.name]
        text, cut = state.limited_text(chunker)
        if cut:
            if settings.over_max_content == "deadletter":
                letters.append((_as_change(state), _too_long_error(state)))
                return None
            metadata[TRUNCATED_FIELD] = str(settings.max_content_tokens)
            log.info(
                "row %s of %s is longer than max_content_tokens (%d): its first %d tokens are "
                "indexed, its hits say %s",
                state.key, state.table.name, settings.max_content_tokens,
                settings.max_content_tokens, TRUNCATED_FIELD,
                extra={"table": state.table.name, "lsn": str(state.lsn)},
            )  # fmt: skip
        return chunker.chunk(text)

    def _plan_metadata(
        self, row: _Row, base: Version, metadata: dict[str, str | float]
    ) -> RowWrite | None:
        """An UPDATE that changed no content column: the base's texts and vectors, with the new
        metadata in new chunk hashes (nothing when the metadata did not change either). A
        base whose text was cut at max_content_tokens stays marked so."""
        marked = {**metadata, TRUNCATED_FIELD: str(row.state.table.settings.max_content_tokens)}
        unchanged = (metadata_fingerprint(metadata), metadata_fingerprint(marked))
        if base.meta in unchanged and not row.replaces:
            return None
        table, key = row.state.table.name, row.state.key
        stored = self.writer.chunk_fields(
            [(table, key, c) for c in base.chunks],
            "content", ORIGINAL_FIELD, "embedding", TRUNCATED_FIELD,
        )  # fmt: skip
        if any(cut for *_fields, cut in stored):
            metadata = marked
        texts = [_readable(content or b"", original) for content, original, *_rest in stored]
        ids = assign_ids([id_text_hash(c) for c in base.chunks], row.state.lsn, None)
        chunks = [
            NewChunk(c, t, vector, n)
            for n, (c, t, (_text, _original, vector, _cut)) in enumerate(
                zip(ids, texts, stored, strict=True)
            )
        ]
        meta = metadata_fingerprint(metadata)
        return _write(row, Version(row.state.lsn, ids, meta=meta), chunks, metadata)

    # ----------------------------------------------------------------- vectors

    def _embed(self, batch: BatchWrite) -> None:
        """Fill every new chunk's vector: a stored one of the same text (in the row's versions,
        or in the index a rebuild replaces), or the provider's. Rows whose text the provider
        refused leave the batch as dead letters."""
        self._reuse_stored(batch.rows)
        if self.donor is not None:
            self._reuse_donor(self.donor, batch.rows)
        todo: dict[str, list[tuple[NewChunk, VectorType]]] = {}
        for row in batch.rows:
            kind = self._types[row.state.table.name]
            for chunk in row.chunks:
                if chunk.vector is None:
                    todo.setdefault(chunk.text, []).append((chunk, kind))
        if not todo:
            return
        texts = list(todo)
        vectors, refused = self._embed_texts(texts)
        for text, vector in zip(texts, vectors, strict=True):
            for chunk, kind in todo[text]:  # the provider's FLOAT32, in the index's type
                chunk.vector = encode(vector, kind) if vector is not None else None
        batch.stats.chunks_embedded += len(texts) - len(refused)
        if refused:
            _drop_refused(batch, {texts[i]: error for i, error in refused.items()})

    def _reuse_stored(self, rows: list[RowWrite]) -> None:
        """Take stored vectors of texts a row's versions already have."""
        reuse: list[tuple[NewChunk, tuple[str, str, str]]] = []
        for row in rows:
            table, key = row.state.table.name, row.state.key
            stored = {id_text_hash(c): c for v in row.known for c in v.chunks}
            for chunk in row.chunks:
                old = stored.get(id_text_hash(chunk.id)) if chunk.vector is None else None
                if old is not None and old != chunk.id:
                    reuse.append((chunk, (table, key, old)))
        if reuse:  # a chunk that is gone (collected, or removed by hand) is embedded again
            found = self.writer.chunk_fields([where for _chunk, where in reuse], "embedding")
            for (chunk, _where), (vector,) in zip(reuse, found, strict=True):
                chunk.vector = vector or None

    def _reuse_donor(self, donor: Donor, rows: list[RowWrite]) -> None:
        """Take the vectors of texts the replaced index holds for the same rows, converted to
        this index's type."""
        wanting = [r for r in rows if any(c.vector is None for c in r.chunks)]
        idents = [(r.state.table.name, r.state.key) for r in wanting]
        reuse: list[tuple[NewChunk, tuple[str, str, str]]] = []
        for row, manifest in zip(wanting, donor.writer.manifests(idents), strict=True):
            table, key = row.state.table.name, row.state.key
            stored = {id_text_hash(c): c for v in manifest.versions for c in v.chunks}
            for chunk in row.chunks:
                old = stored.get(id_text_hash(chunk.id)) if chunk.vector is None else None
                if old is not None:
                    reuse.append((chunk, (table, key, old)))
        if not reuse:
            return
        found = donor.writer.chunk_fields([where for _chunk, where in reuse], "embedding")
        for (chunk, (table, _key, _old)), (vector,) in zip(reuse, found, strict=True):
            if vector:
                chunk.vector = convert(vector, donor.types[table], self._types[table])

    def _embed_texts(self, texts: list[str]) -> tuple[list[bytes | None], dict[int, str]]:
        """The provider's vectors for `texts`, and the errors of the texts it refused."""
        try:
            return list(self.embedder.embed(texts)), {}
        except EmbeddingRejected as exc:
            return exc.vectors, exc.errors


def _stored_fields(content: bytes, original: bytes | None) -> dict[str, str]:
    fields = {"content": content.decode()}
    if original is not None:
        fields[ORIGINAL_FIELD] = original.decode()
    return fields


def _readable(content: bytes, original: bytes | None) -> str:
    """A stored chunk's text as written (core.fulltext)."""
    return readable(content.decode(), original.decode() if original is not None else None)


def _drop_refused(batch: BatchWrite, refused: dict[str, str]) -> None:
    """Rows with a text the provider refused become dead letters; the others are staged."""
    kept = []
    for row in batch.rows:
        errors = [refused[c.text] for c in row.chunks if c.text in refused]
        if errors:
            batch.letters.append((_as_change(row.state), errors[0]))
        else:
            kept.append(row)
    batch.rows = kept


def _builds_on(state: RowState, manifest: Manifest, visible: Lsn, floor: Lsn | None) -> _Row | None:
    """What the change builds on, or None when a visible version already covers it. `floor`
    is the table's truncate (or resync) floor at the change's LSN."""
    seen = manifest.at(visible)
    if seen is not None and seen.lsn >= state.lsn:
        return None
    replaces = [v for v in manifest.pending(visible) if v.lsn >= state.lsn]
    # The newest version at or before the change. One at the change's own LSN is an earlier
    # piece of the same large transaction (or the same transaction staged before a crash): the
    # change follows it, and replaces it.
    base = next((v for v in manifest.versions if v.lsn <= state.lsn), None)
    if base is not None and floor is not None and base.lsn < floor:
        # Below the floor the row did not exist at the change (a TRUNCATE, a resync): it is no
        # base whose chunks can be kept, since garbage collection may be removing them now.
        base = None
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
    return (
        f"table {state.table.name}: the UPDATE left out content column(s) {columns} (unchanged "
        "TOASTed values, or dropped/renamed columns) and their text is not known: run ALTER "
        f"TABLE {state.table.name} REPLICA IDENTITY FULL so updates carry it"
    )


def _too_long_error(state: RowState) -> str:
    settings = state.table.settings
    return (
        f"table {state.table.name}: the row's text is longer than max_content_tokens "
        f'({settings.max_content_tokens} tokens) and over_max_content is "deadletter": raise '
        f'max_content_tokens, or set over_max_content = "truncate" to index its beginning'
    )


def _as_change(state: RowState) -> RowChange:
    return RowChange(Op.INSERT if state.inserted else Op.UPDATE, state.table.name, new=state.values)

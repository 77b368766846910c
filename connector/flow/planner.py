"""Planning a batch: from row states to finished writes, before any key is WATCHed.

For each row it reads what Redis holds (manifest, tombstone, the table's truncate floor) and
skips changes older than that; it reads back content columns an UPDATE left out (TOAST, see
source.reselect); it cuts the text into chunks, reuses the stored vector of every chunk whose
text the row already had, and embeds only the rest. Rows the provider refuses, or whose text
cannot be known, become dead letters. The sink then writes the plan as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from connector.config import Settings
from connector.core.changes import Op, RowChange
from connector.core.chunking import Chunker, text_hash
from connector.core.lsn import Lsn
from connector.core.rows import BatchEffects, RowState
from connector.embed.base import Embedder
from connector.embed.tokenizer import get_encoding
from connector.errors import EmbeddingRejected
from connector.sink.writer import ApplyStats, BatchWrite, Held, IndexWriter, Manifest, RowWrite
from connector.source.reselect import Reselected

# Reads back content columns an UPDATE left out (see source.reselect): fills the states in
# place and says which rows are gone and which could not be read.
Reselect = Callable[[Sequence[RowState]], Reselected]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Slot:
    """One chunk of one planned row that still needs a vector."""

    row: RowWrite
    n: int


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
        # Vectors of the batch in hand, kept until it is written: a batch planned again (a race,
        # or Redis refused the write at maxmemory) does not pay the provider twice.
        self._vectors: dict[str, bytes] = {}

    def written(self) -> None:
        """The batch in hand is written: forget its vectors."""
        self._vectors.clear()

    def plan(
        self, effects: BatchEffects, checkpoint: Lsn | None, commit_time: float | None = None
    ) -> BatchWrite:
        states = list(effects.rows.values())
        idents = [(s.table.name, s.key) for s in states]
        held = self.writer.held(idents)
        floors = self.writer.floors({*(s.table.name for s in states), *effects.truncated})
        batch = BatchWrite(
            rows=[],
            seen=dict(zip(idents, held, strict=True)),
            floors=floors,
            truncated=dict(effects.truncated),
            letters=list(effects.skipped),
            last_lsn=effects.last_lsn,
            checkpoint=checkpoint,
            commit_time=commit_time,
        )
        current = [
            (state, marks)
            for state, marks in zip(states, held, strict=True)
            if not _stale(state, marks, floors, batch.stats)
        ]
        reread = self._reselect([s for s, m in current if _needs_reselect(s, m.manifest)], batch)
        for state, marks in current:
            ident = (state.table.name, state.key)
            if ident in reread.gone:
                batch.stats.skipped_stale += 1  # deleted or re-keyed later: that change follows
            elif ident in reread.errors:
                batch.letters.append((_as_change(state), reread.errors[ident]))
            else:
                row = self._plan_row(state, marks, batch.letters)
                if row is not None:
                    batch.rows.append(row)
        self._embed(batch)
        return batch

    def _reselect(self, states: list[RowState], batch: BatchWrite) -> Reselected:
        if not states or self.reselect is None:
            return Reselected()
        found = self.reselect(states)
        batch.stats.reselected += found.filled
        return found

    def _plan_row(
        self, state: RowState, held: Held, letters: list[tuple[RowChange, str]]
    ) -> RowWrite | None:
        row = RowWrite(state, held)
        if state.deleted:
            return row
        missing = state.missing_content
        if missing and not _needs_reselect(state, held.manifest) and not state.inserted:
            row.metadata_only = True  # no content column changed: keep chunks and vectors
            return row
        if missing:
            letters.append((_as_change(state), _missing_columns_error(state, missing)))
            return None
        row.chunks = self._chunkers[state.table.name].chunk(state.text())
        row.hashes = [text_hash(chunk) for chunk in row.chunks]
        row.vectors = [None] * len(row.chunks)
        if not row.chunks:
            log.warning(
                "row %s of %s has no text to index (content NULL, empty or blank): it is kept "
                "out of search results",
                state.key,
                state.table.name,
                extra={"table": state.table.name, "lsn": str(state.lsn)},
            )
        return row

    # ----------------------------------------------------------------- vectors

    def _embed(self, batch: BatchWrite) -> None:
        """Fill every chunk's vector: the stored one where the row already had that text, one
        paid for by an earlier attempt, or the provider's. Rows whose text the provider refused
        leave the plan as dead letters."""
        todo: dict[str, list[_Slot]] = {}
        self._reuse_stored(batch.rows, todo)
        for chunk in [c for c in todo if c in self._vectors]:
            for slot in todo.pop(chunk):
                slot.row.vectors[slot.n] = self._vectors[chunk]
        if not todo:
            return
        texts = list(todo)
        vectors, refused = self._embed_texts(texts)
        for chunk, vector in zip(texts, vectors, strict=True):
            if vector is not None:
                self._vectors[chunk] = vector
            for slot in todo[chunk]:
                slot.row.vectors[slot.n] = vector
        batch.stats.chunks_embedded += len(texts) - len(refused)
        failed = {id(slot.row): error for i, error in refused.items() for slot in todo[texts[i]]}
        if failed:  # the provider refused their text: dead-letter them, write the others
            batch.letters += [
                (_as_change(r.state), failed[id(r)]) for r in batch.rows if id(r) in failed
            ]
            batch.rows = [row for row in batch.rows if id(row) not in failed]

    def _reuse_stored(self, rows: list[RowWrite], todo: dict[str, list[_Slot]]) -> None:
        """Take the stored vectors of chunk texts a row already had; the rest join `todo`."""
        reuse: list[tuple[_Slot, tuple[str, str, int]]] = []
        for row in rows:
            old = (
                {h: n for n, h in enumerate(row.held.manifest.hashes)} if row.held.manifest else {}
            )
            table, key = row.state.table.name, row.state.key
            for n, (chunk, digest) in enumerate(zip(row.chunks, row.hashes, strict=True)):
                if digest in old:
                    reuse.append((_Slot(row, n), (table, key, old[digest])))
                else:
                    todo.setdefault(chunk, []).append(_Slot(row, n))
        if not reuse:
            return
        stored = self.writer.stored_vectors([where for _slot, where in reuse])
        for (slot, _where), vector in zip(reuse, stored, strict=True):
            if vector is None:  # the old chunk is gone (removed by hand?): embed again
                todo.setdefault(slot.row.chunks[slot.n], []).append(slot)
            else:
                slot.row.vectors[slot.n] = vector

    def _embed_texts(self, texts: list[str]) -> tuple[list[bytes | None], dict[int, str]]:
        """The provider's vectors for `texts`, and the errors of the texts it refused."""
        try:
            return list(self.embedder.embed(texts)), {}
        except EmbeddingRejected as exc:
            return exc.vectors, exc.errors


def _stale(state: RowState, held: Held, floors: dict[str, Lsn], stats: ApplyStats) -> bool:
    """True (and counted) when Redis already holds this row at or after the change."""
    marks = (held.manifest and held.manifest.lsn, held.tomb, floors.get(state.table.name))
    newest = max((m for m in marks if m), default=None)
    if newest is not None and newest >= state.lsn:
        stats.skipped_stale += 1
        return True
    return False


def _needs_reselect(state: RowState, manifest: Manifest | None) -> bool:
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

"""Planning a batch: from row states to finished writes (new row versions), before staging.

For each row it reads the row's manifest and its table's truncate floors (through
core.plan.IndexReads: no Redis here), and skips a change that a visible version (or floor)
already covers. Pending versions at or after the change are leftovers of an earlier attempt (a
restart staging the same transaction again, or the same row earlier in one large transaction):
the new version replaces them. It reads back columns an UPDATE left out (TOAST, see
source.reselect), then plans each row's new version (flow.row_plan: chunks and their
content-addressed ids) and fills the new chunks' vectors (flow.embedding). Rows the provider
refuses, or whose text cannot be known, become dead letters. The plan is plain data
(core.plan) that the writer (sink.writer) stages.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from connector.config import TableSettings
from connector.core.chunking import Chunker, text_hash
from connector.core.fulltext import ORIGINAL_FIELD, content_fields
from connector.core.lsn import Lsn
from connector.core.plan import ApplyStats, BatchWrite, IndexReads, letter_change
from connector.core.rows import BatchEffects, RowState
from connector.core.tables import TableInfo
from connector.core.versions import floor_at, id_text_hash
from connector.embed.base import Embedder
from connector.embed.tokenizer import get_encoding
from connector.flow.embedding import Donor, VectorFill
from connector.flow.row_plan import RowPlanner, builds_on, needs_reselect, stored_text
from connector.source.reselect import Reselected

# Reads back columns an UPDATE left out (see source.reselect): fills the states in place and
# says which rows are gone and which could not be read.
Reselect = Callable[[Sequence[RowState]], Reselected]


class Planner:
    """Plans batches for the indexes of `tables` (rows of other tables are left out), reading
    them through `reads` and embedding with `embedder` (whose model's tokenizer cuts chunks).
    A rebuild's index takes vectors from `donor`, and leaves dead letters to the current one
    (`dead_letters` off)."""

    def __init__(
        self,
        reads: IndexReads,
        tables: Sequence[TableSettings],
        embedder: Embedder,
        reselect: Reselect | None = None,
        donor: Donor | None = None,
        dead_letters: bool = True,
    ) -> None:
        self.reads = reads
        self.reselect = reselect
        self.dead_letters = dead_letters  # a rebuild's index leaves them to the current one
        encoding = get_encoding(embedder.model)
        self._tables = {t.qualified_name: t for t in tables}
        chunkers = {
            t.qualified_name: Chunker(
                encoding, t.chunk_tokens, t.chunk_overlap, t.max_content_tokens
            )
            for t in tables
        }
        self._rows = RowPlanner(reads, chunkers)
        types = {t.qualified_name: t.vector.type for t in tables}
        self._vectors = VectorFill(reads, embedder, types, donor)
        self._bound: dict[str, TableInfo] = {}

    def plan(self, effects: BatchEffects, visible: Lsn) -> BatchWrite:
        """The writes of `effects` for readers now at `visible`."""
        changed = [*effects.rows.values(), *self._leaf_deletes(effects)]
        states = [self._bind(s) for s in changed if s.table.name in self._tables]
        idents = [(s.table.name, s.key) for s in states]
        manifests, floors = self.reads.manifests_and_floors(idents)
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
            row = builds_on(state, manifest, visible, floor_at(cuts, state.lsn))
            if row is None or any(state.lsn < f for f in cuts):
                batch.stats.skipped_stale += 1
            else:
                rows.append(row)
        reread = self._reselect([r.state for r in rows if needs_reselect(r)], batch.stats)
        for row in rows:
            ident = (row.state.table.name, row.state.key)
            if ident in reread.gone:
                batch.stats.skipped_stale += 1  # deleted or re-keyed later: that change follows
            elif ident in reread.errors:
                batch.letters.append((letter_change(row.state), reread.errors[ident]))
            else:
                write = self._rows.plan(row, batch.letters)
                if write is not None:
                    batch.rows.append(write)
        self._mend(batch)
        self._vectors.fill(batch)
        return batch

    def _leaf_deletes(self, effects: BatchEffects) -> list[RowState]:
        """The rows Redis holds in a partition truncated alone, deleted at the truncate's LSN
        (rows the batch itself wrote after the truncate are in `effects.rows` already)."""
        deletes = []
        for (table, leaf), cut in effects.truncated_leaves.items():
            if table not in self._tables:
                continue
            for key in self.reads.rows_in_leaf(table, leaf):
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
        stored = self.reads.chunk_fields(where, "content", ORIGINAL_FIELD)
        renormalise = []
        for (row, chunk), place, (content, original) in zip(kept, where, stored, strict=True):
            if content is not None and _stored_fields(content, original) == content_fields(
                chunk.text
            ):
                continue  # intact
            row.chunks.append(chunk)
            written = stored_text(content, original) if content is not None else None
            if written is not None and text_hash(written) == id_text_hash(chunk.id):
                renormalise.append((chunk, place))
        vectors = self.reads.chunk_fields([place for _c, place in renormalise], "embedding")
        for (chunk, _place), (vector,) in zip(renormalise, vectors, strict=True):
            chunk.vector = vector or None

    def _reselect(self, states: list[RowState], stats: ApplyStats) -> Reselected:
        if not states or self.reselect is None:
            return Reselected()
        found = self.reselect(states)
        stats.reselected += found.filled
        return found


def _stored_fields(content: bytes, original: bytes | None) -> dict[str, str]:
    fields = {"content": content.decode()}
    if original is not None:
        fields[ORIGINAL_FIELD] = original.decode()
    return fields

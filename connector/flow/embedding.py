"""Filling a planned batch's vectors (flow.planner): a new chunk takes a stored vector of the
same text (in the row's versions, or in the index a rebuild with the same model replaces) before
the provider is asked. Unchanged chunk text is never sent to the provider again; rows whose
text the provider refuses become dead letters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from connector.config import VectorType
from connector.core.plan import BatchWrite, IndexReads, NewChunk, RowWrite, letter_change
from connector.core.vectors import convert, encode
from connector.core.versions import id_text_hash
from connector.embed.base import Embedder
from connector.errors import EmbeddingRejected


@dataclass(frozen=True, slots=True)
class Donor:
    """The index a rebuild with the same model replaces: its vectors are taken, not embedded."""

    reads: IndexReads
    types: dict[str, VectorType]  # table -> the donor's vector type


class VectorFill:
    """Fills new chunks' vectors for indexes of vector `types` (by table), reading stored ones
    through `reads` (and `donor`'s), embedding the rest with `embedder`."""

    def __init__(
        self,
        reads: IndexReads,
        embedder: Embedder,
        types: Mapping[str, VectorType],
        donor: Donor | None = None,
    ) -> None:
        self.reads = reads
        self.embedder = embedder
        self.types = types
        self.donor = donor

    def fill(self, batch: BatchWrite) -> None:
        """Fill every new chunk's vector: a stored one of the same text (in the row's versions,
        or in the index a rebuild replaces), or the provider's. Rows whose text the provider
        refused leave the batch as dead letters."""
        self._reuse_stored(batch.rows)
        if self.donor is not None:
            self._reuse_donor(self.donor, batch.rows)
        todo: dict[str, list[tuple[NewChunk, VectorType]]] = {}
        for row in batch.rows:
            kind = self.types[row.state.table.name]
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
            found = self.reads.chunk_fields([where for _chunk, where in reuse], "embedding")
            for (chunk, _where), (vector,) in zip(reuse, found, strict=True):
                chunk.vector = vector or None

    def _reuse_donor(self, donor: Donor, rows: list[RowWrite]) -> None:
        """Take the vectors of texts the replaced index holds for the same rows, converted to
        this index's type."""
        wanting = [r for r in rows if any(c.vector is None for c in r.chunks)]
        idents = [(r.state.table.name, r.state.key) for r in wanting]
        reuse: list[tuple[NewChunk, tuple[str, str, str]]] = []
        for row, manifest in zip(wanting, donor.reads.manifests(idents), strict=True):
            table, key = row.state.table.name, row.state.key
            stored = {id_text_hash(c): c for v in manifest.versions for c in v.chunks}
            for chunk in row.chunks:
                old = stored.get(id_text_hash(chunk.id)) if chunk.vector is None else None
                if old is not None:
                    reuse.append((chunk, (table, key, old)))
        if not reuse:
            return
        found = donor.reads.chunk_fields([where for _chunk, where in reuse], "embedding")
        for (chunk, (table, _key, _old)), (vector,) in zip(reuse, found, strict=True):
            if vector:
                chunk.vector = convert(vector, donor.types[table], self.types[table])

    def _embed_texts(self, texts: list[str]) -> tuple[list[bytes | None], dict[int, str]]:
        """The provider's vectors for `texts`, and the errors of the texts it refused."""
        try:
            return list(self.embedder.embed(texts)), {}
        except EmbeddingRejected as exc:
            return exc.vectors, exc.errors


def _drop_refused(batch: BatchWrite, refused: dict[str, str]) -> None:
    """Rows with a text the provider refused become dead letters; the others are staged."""
    kept = []
    for row in batch.rows:
        errors = [refused[c.text] for c in row.chunks if c.text in refused]
        if errors:
            batch.letters.append((letter_change(row.state), errors[0]))
        else:
            kept.append(row)
    batch.rows = kept

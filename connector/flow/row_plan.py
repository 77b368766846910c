"""Planning one row: what its change builds on, and the new version it writes (flow.planner).

A change builds on the row's newest version at or before it (`builds_on`); a change that a
visible version already covers is stale. The new version cuts the row's text into chunks and
gives each its content-addressed id: a chunk whose text (and the row's metadata) did not change
keeps the id of the version it came from and is not written again. An UPDATE that changed no
content column keeps the base's texts and vectors, in new chunk hashes for the new metadata.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from connector.core.changes import RowChange
from connector.core.chunking import TRUNCATED_FIELD, Chunker, text_hash
from connector.core.fulltext import ORIGINAL_FIELD, readable
from connector.core.lsn import Lsn
from connector.core.plan import IndexReads, NewChunk, RowWrite, letter_change
from connector.core.rows import RowState
from connector.core.tables import gone_columns
from connector.core.versions import (
    Manifest,
    Version,
    assign_ids,
    id_text_hash,
    metadata_fingerprint,
)

log = logging.getLogger("connector.flow.planner")  # one logger for the planner's warnings

# A dead letter: the change and why.
Letters = list[tuple[RowChange, str]]


@dataclass(slots=True)
class RowBasis:
    """A row being planned: its change, its manifest, and what the new version builds on."""

    state: RowState
    manifest: Manifest
    base: Version | None  # the newest version at or before the change: what it follows
    replaces: list[Version]  # pending versions at or after the change


def builds_on(
    state: RowState, manifest: Manifest, visible: Lsn, floor: Lsn | None
) -> RowBasis | None:
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
    return RowBasis(state, manifest, base, replaces)


def needs_reselect(row: RowBasis) -> bool:
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


def stored_text(content: bytes, original: bytes | None) -> str:
    """A stored chunk's text as written (core.fulltext)."""
    return readable(content.decode(), original.decode() if original is not None else None)


class RowPlanner:
    """Plans rows' new versions, cutting text with each table's chunker (`chunkers`, by table)
    and reading stored chunks through `reads`. Rows it cannot plan go to `letters`."""

    def __init__(self, reads: IndexReads, chunkers: Mapping[str, Chunker]) -> None:
        self.reads = reads
        self.chunkers = chunkers

    def plan(self, row: RowBasis, letters: Letters) -> RowWrite | None:
        """The row's write, or None when the index already holds it (or it is dead-lettered)."""
        state = row.state
        if state.deleted:
            return _write(row, Version(state.lsn, deleted=True), [], {})
        if state.inserted and (state.missing_content or state.missing_metadata):
            # An INSERT carries every column: the ones it lacks are gone (as an UPDATE's
            # read-back finds them), and a row is never indexed without its metadata.
            missing = [*state.missing_content, *state.missing_metadata]
            letters.append((letter_change(state), gone_columns(state.table, "INSERT", missing)))
            return None
        metadata = state.metadata_fields()
        base = row.base if row.base is not None and not row.base.deleted else None
        if state.missing_content:
            if base is None or len(state.missing_content) < len(state.table.settings.content):
                letters.append((letter_change(state), _missing_columns_error(state)))
                return None
            return self._metadata_only(row, base, metadata)
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
        self, state: RowState, metadata: dict[str, str | float], letters: Letters
    ) -> list[str] | None:
        """The row's chunk texts, within the table's `max_content_tokens`: a longer text is
        cut (and `metadata` marked) or dead-lettered (None), as `over_max_content` says."""
        settings = state.table.settings
        chunker = self.chunkers[state.table.name]
        text, cut = state.limited_text(chunker)
        if cut:
            if settings.over_max_content == "deadletter":
                letters.append((letter_change(state), _too_long_error(state)))
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

    def _metadata_only(
        self, row: RowBasis, base: Version, metadata: dict[str, str | float]
    ) -> RowWrite | None:
        """An UPDATE that changed no content column: the base's texts and vectors, with the new
        metadata in new chunk hashes (nothing when the metadata did not change either). A
        base whose text was cut at max_content_tokens stays marked so."""
        marked = {**metadata, TRUNCATED_FIELD: str(row.state.table.settings.max_content_tokens)}
        unchanged = (metadata_fingerprint(metadata), metadata_fingerprint(marked))
        if base.meta in unchanged and not row.replaces:
            return None
        table, key = row.state.table.name, row.state.key
        stored = self.reads.chunk_fields(
            [(table, key, c) for c in base.chunks],
            "content", ORIGINAL_FIELD, "embedding", TRUNCATED_FIELD,
        )  # fmt: skip
        if any(cut for *_fields, cut in stored):
            metadata = marked
        texts = [stored_text(content or b"", original) for content, original, *_rest in stored]
        ids = assign_ids([id_text_hash(c) for c in base.chunks], row.state.lsn, None)
        chunks = [
            NewChunk(c, t, vector, n)
            for n, (c, t, (_text, _original, vector, _cut)) in enumerate(
                zip(ids, texts, stored, strict=True)
            )
        ]
        meta = metadata_fingerprint(metadata)
        return _write(row, Version(row.state.lsn, ids, meta=meta), chunks, metadata)


def _write(
    row: RowBasis, version: Version, chunks: list[NewChunk], metadata: dict[str, str | float]
) -> RowWrite:
    known = list(row.manifest.versions)
    return RowWrite(row.state, version, chunks, dict(metadata), row.replaces, known)


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

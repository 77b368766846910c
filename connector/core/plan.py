"""The write plan: what the planner (flow.planner) decides and the writer (sink.writer) stages.

Plain data, and the reads the planner makes of an index (`IndexReads`: manifests, floors,
stored chunk fields, a partition's rows), so that the planner's decisions need no Redis: the
sink implements the reads (sink.view.RedisReads), a test an in-memory one. Pure: no I/O here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from connector.core.changes import Op, RowChange
from connector.core.lsn import Lsn
from connector.core.rows import RowState
from connector.core.versions import Manifest, Version


class IndexReads(Protocol):
    """What the planner reads of the indexes it plans for (rows by table and encoded key)."""

    def manifests(self, rows: Sequence[tuple[str, str]]) -> list[Manifest]:
        """The manifest of each row (table, encoded key), in order."""
        ...

    def manifests_and_floors(
        self, rows: Sequence[tuple[str, str]]
    ) -> tuple[list[Manifest], dict[str, list[Lsn]]]:
        """The manifest of each row (table, encoded key), in order, and the truncate floors of
        their tables, read together (one round trip: a lone commit's plan waits for it)."""
        ...

    def chunk_fields(
        self, chunks: Sequence[tuple[str, str, str]], *fields: str
    ) -> list[list[bytes | None]]:
        """Fields of chunk hashes (table, row key, chunk id); None where a chunk is gone."""
        ...

    def rows_in_leaf(self, table: str, leaf: str) -> list[str]:
        """The encoded keys of `table`'s rows whose manifest says they are in partition `leaf`."""
        ...


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


def letter_change(state: RowState) -> RowChange:
    """The change a dead letter of `state` records (its values as the batch left them)."""
    return RowChange(Op.INSERT if state.inserted else Op.UPDATE, state.table.name, new=state.values)

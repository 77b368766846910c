"""The table model: a configured table as the database has it (filled in by source.catalog)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from connector.config import TableSettings


@dataclass(frozen=True, slots=True)
class TableInfo:
    """A configured table as the database has it."""

    settings: TableSettings
    key: tuple[str, ...]
    replica_identity: str  # d(efault) n(othing) f(ull) i(ndex)
    column_types: dict[str, str]  # name -> format_type()
    # A partitioned table: its leaf partitions (any depth), as wal2json names them
    # (`schema.table`). Changes arrive under a leaf's name and are indexed under this table.
    partitioned: bool = False
    leaves: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        return self.settings.qualified_name

    @property
    def full_identity(self) -> bool:
        return self.replica_identity == "f"

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns the connector reads: key, content, metadata (each once, in that order)."""
        wanted = [*self.key, *self.settings.content, *self.settings.metadata]
        return tuple(dict.fromkeys(wanted))


def routes(tables: Iterable[TableInfo]) -> dict[str, TableInfo]:
    """Each relation whose changes belong to a configured table, by the name wal2json gives it:
    the table itself and, for a partitioned table, each of its leaf partitions."""
    found: dict[str, TableInfo] = {}
    for table in tables:
        found[table.name] = table
        for leaf in table.leaves:
            found[leaf] = table
    return found


def gone_columns(table: TableInfo, op: str, columns: Iterable[str], detail: str = "") -> str:
    """Why a change of `table` that lacks configured `columns` is dead-lettered: an INSERT
    carries every column, so they are gone (an UPDATE's read-back finds them gone, `detail`).
    INSERTs and UPDATEs say the same, naming content and metadata columns for what they are."""
    missing = list(columns)
    content = [c for c in missing if c in table.settings.content]
    metadata = [c for c in missing if c not in content]
    named = (("content", content), ("metadata", metadata))
    kinds = [f"{kind} column(s) {', '.join(found)}" for kind, found in named if found]
    fix = (
        "fix [[tables]] content (`connector reindex` rebuilds the index with it)"
        if content
        else "fix [[tables]] metadata (`connector reindex` changes that in place)"
    )
    return (
        f"table {table.name}: the {op} has no {' and '.join(kinds)}{detail}: dropped or renamed? "
        f"Restore the column, or {fix}; then `connector resync --table {table.name}` copies "
        "the rows whose changes were dead-lettered"
    )

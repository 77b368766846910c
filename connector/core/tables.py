"""The table model: a configured table as the database has it (filled in by source.catalog)."""

from __future__ import annotations

from dataclasses import dataclass

from connector.config import TableSettings


@dataclass(frozen=True, slots=True)
class TableInfo:
    """A configured table as the database has it."""

    settings: TableSettings
    key: tuple[str, ...]
    replica_identity: str  # d(efault) n(othing) f(ull) i(ndex)
    column_types: dict[str, str]  # name -> format_type()

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

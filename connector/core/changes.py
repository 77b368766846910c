"""The change model: what a committed source transaction did to the configured tables (pure data).

Values travel as PostgreSQL's own text output plus the column's type name (`format_type()`), so a
row read by the initial snapshot (`SELECT col::text`) and the same row decoded from wal2json are
identical. `PgValue.value` gives the typed Python value (int, Decimal, bool, datetime, list...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from connector.core.lsn import Lsn
from connector.core.pgtypes import PgValue

Row = Mapping[str, PgValue]
"""Column name -> value. A column absent from an UPDATE's new row (unchanged TOAST) is absent
here too: absent means "not present in the change", never NULL."""


class Op(Enum):
    INSERT = "I"
    UPDATE = "U"
    DELETE = "D"
    TRUNCATE = "T"


@dataclass(frozen=True, slots=True)
class RowChange:
    """An insert, update or delete of one row, or a truncate of the table.

    `new` is the row after the change (inserts, updates), `old` the replica identity before it
    (updates when the key changed or under REPLICA IDENTITY FULL, and deletes).
    """

    op: Op
    table: str  # schema.table, as wal2json names it
    new: Row = field(default_factory=dict)
    old: Row = field(default_factory=dict)
    lsn: Lsn | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """A logical decoding message (pg_logical_emit_message), e.g. a heartbeat."""

    prefix: str
    content: str
    transactional: bool
    lsn: Lsn | None = None


@dataclass(frozen=True, slots=True)
class Begin:
    xid: int | None
    lsn: Lsn | None = None
    timestamp: datetime | None = None
    # wal2json's "nextlsn" on BEGIN: the end of the commit record, the LSN the transaction is
    # checkpointed at. Known before any change arrives, so a large transaction can be staged
    # in pieces as it streams.
    commit_lsn: Lsn | None = None


@dataclass(frozen=True, slots=True)
class Commit:
    xid: int | None
    lsn: Lsn  # the commit record's LSN: the position a transaction is checkpointed at
    timestamp: datetime | None = None


Record = Begin | Commit | RowChange | Message


@dataclass(slots=True)
class Transaction:
    """Every change of one committed source transaction, in commit order."""

    xid: int | None
    commit_lsn: Lsn
    commit_time: datetime | None
    changes: list[RowChange]
    messages: list[Message] = field(default_factory=list)
    # A piece of a large transaction whose rest is still on the way: staged, never flipped
    # alone (the piece that carries its commit is the one that makes it visible).
    partial: bool = False
    # A later piece (or the end) of a transaction whose earlier pieces were handed over: they
    # may be staged already, at the same commit LSN.
    continued: bool = False

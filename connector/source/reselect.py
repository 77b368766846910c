"""Read back, by key, the content (and metadata) columns an UPDATE left out (what Debezium's
"reselect columns" post-processor does).

wal2json leaves unchanged TOASTed values out of an UPDATE with no placeholder. Under REPLICA
IDENTITY FULL the old row carries them; under the default identity it does not, so when only
some content columns changed, the others are read from the table: one query per table per
batch. The value read may be newer than the change being applied; that converges, because the
later change follows in the stream and is applied after it. A row the query no longer finds was
deleted (or re-keyed) later: that later change removes it, so it is skipped here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from connector.core.pgtypes import PgValue
from connector.core.rows import RowState
from connector.core.tables import TableInfo, gone_columns
from connector.source.connection import connect_dsn

log = logging.getLogger(__name__)

RowId = tuple[str, str]  # (table, encoded key)


@dataclass(slots=True)
class Reselected:
    """What the read-back found: rows filled in place, rows gone, rows that cannot be read."""

    filled: int = 0
    gone: set[RowId] = field(default_factory=set)
    errors: dict[RowId, str] = field(default_factory=dict)


class Reselector:
    """Owns one autocommit connection (made on first use); `close()` ends it."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    def __call__(self, states: Sequence[RowState]) -> Reselected:
        """Fill each state's missing content columns from its table, in place."""
        result = Reselected()
        by_table: dict[str, list[RowState]] = {}
        for state in states:
            by_table.setdefault(state.table.name, []).append(state)
        for group in by_table.values():
            self._fill_table(group, result)
        return result

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _connection(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = connect_dsn(self._dsn)
        return self._conn

    def _fill_table(self, group: list[RowState], result: Reselected) -> None:
        table = group[0].table
        columns = list(dict.fromkeys(c for state in group for c in _missing(state)))
        try:
            found = self._select(table, columns, group)
        except (
            psycopg.errors.UndefinedTable,
            psycopg.errors.UndefinedColumn,
            psycopg.errors.InsufficientPrivilege,
        ) as exc:
            error = _unreadable(table, columns, exc)
            result.errors.update({(table.name, s.key): error for s in group})
            return
        for state in group:
            row = found.get(_key_texts(table, state))
            if row is None:
                result.gone.add((table.name, state.key))
                continue
            for column in _missing(state):
                state.values[column] = PgValue(row[column], table.column_types[column])
            result.filled += 1

    def _select(
        self, table: TableInfo, columns: list[str], group: list[RowState]
    ) -> dict[tuple[str | None, ...], dict[str, str | None]]:
        """The rows of `group` by key text: one query, the keys as typed arrays (so the table's
        key index serves it), every value as PostgreSQL text (the form wal2json sends)."""
        schema, name = table.settings.schema_and_table
        key = list(table.key)
        texts = sql.SQL(", ").join(
            sql.SQL("{}::text").format(sql.Identifier(c)) for c in (*key, *columns)
        )
        arrays = sql.SQL(", ").join(
            sql.SQL("{}::{}[]").format(sql.Placeholder(), sql.SQL(table.column_types[k]))
            for k in key
        )
        query = sql.SQL("SELECT {} FROM {} WHERE ({}) IN (SELECT * FROM unnest({}))").format(
            texts,
            sql.Identifier(schema, name),
            sql.SQL(", ").join(sql.Identifier(k) for k in key),
            arrays,
        )
        keys = [_key_texts(table, state) for state in group]
        params = [[k[i] for k in keys] for i in range(len(key))]
        rows = self._connection().execute(query, params).fetchall()
        width = len(key)
        return {
            tuple(_text(v) for v in row[:width]): {
                c: _text(v) for c, v in zip(columns, row[width:], strict=True)
            }
            for row in rows
        }


def _missing(state: RowState) -> list[str]:
    return [*state.missing_content, *state.missing_metadata]


def _key_texts(table: TableInfo, state: RowState) -> tuple[str | None, ...]:
    return tuple(state.values[k].text if k in state.values else None for k in table.key)


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _unreadable(table: TableInfo, columns: list[str], exc: Exception) -> str:
    reason = str(exc).strip().splitlines()[0]
    if isinstance(exc, psycopg.errors.UndefinedColumn):  # said as an INSERT says it
        return gone_columns(table, "UPDATE", columns, f" (reading them back failed: {reason})")
    return (
        f"table {table.name}: an UPDATE left out column(s) {', '.join(columns)} (unchanged "
        f"TOASTed values) and reading them back failed: {reason}. Was the table dropped or "
        "renamed, or may the connector's role not read it? Fix [[tables]] or GRANT SELECT, "
        f"then `connector resync --table {table.name}`"
    )

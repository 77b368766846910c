"""The consistent initial copy: every row of a table as of the slot's exported snapshot.

The slot is created with EXPORT_SNAPSHOT; this module reads the tables inside that snapshot
(REPEATABLE READ + SET TRANSACTION SNAPSHOT) with a server-side cursor, so the copy and the
stream that starts at the slot's consistent point meet exactly: no row missed, none doubled.
Values are read as PostgreSQL text (`col::text`), the same form wal2json sends.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import psycopg
from psycopg import sql

from connector.core.changes import Op, RowChange
from connector.core.pgtypes import PgValue
from connector.core.tables import TableInfo

log = logging.getLogger(__name__)


def open_snapshot(dsn: str, snapshot: str | None) -> psycopg.Connection[tuple[object, ...]]:
    """A connection in a REPEATABLE READ transaction that sees `snapshot` (or a fresh one)."""
    conn: psycopg.Connection[tuple[object, ...]] = psycopg.connect(dsn)
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    if snapshot:
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
    return conn


def count_rows(conn: psycopg.Connection[tuple[object, ...]], table: TableInfo) -> int:
    schema, name = table.settings.schema_and_table
    query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, name))
    row = conn.execute(query).fetchone()
    return int(str(row[0])) if row else 0


def copy_table(
    conn: psycopg.Connection[tuple[object, ...]], table: TableInfo, batch_rows: int = 2000
) -> Iterator[list[RowChange]]:
    """The table's rows, as insert changes, in batches of `batch_rows`."""
    schema, name = table.settings.schema_and_table
    columns = table.columns
    query = sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns),
        sql.Identifier(schema, name),
    )
    types = [table.column_types[c] for c in columns]
    with conn.cursor(name=f"connector_copy_{name}") as cursor:
        cursor.itersize = batch_rows
        cursor.execute(query)
        while rows := cursor.fetchmany(batch_rows):
            yield [
                RowChange(
                    Op.INSERT,
                    table.name,
                    new={
                        col: PgValue(None if value is None else str(value), kind)
                        for col, kind, value in zip(columns, types, row, strict=True)
                    },
                )
                for row in rows
            ]

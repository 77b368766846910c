"""The consistent initial copy: every row of a table as of the slot's exported snapshot.

The slot is created with EXPORT_SNAPSHOT; this module reads the tables inside that snapshot
(source.connection.open_snapshot: REPEATABLE READ + SET TRANSACTION SNAPSHOT) with a server-side
cursor, so the copy and the stream that starts at the slot's consistent point meet exactly: no
row missed, none doubled. Values are read as PostgreSQL text (`col::text`), the same form
wal2json sends.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import psycopg
from psycopg import sql

from connector.core.changes import Op, RowChange
from connector.core.pgtypes import PgValue
from connector.core.tables import TableInfo
from connector.errors import ConfigError

log = logging.getLogger(__name__)


def _relation(table: TableInfo, only: str | None) -> sql.Identifier:
    """The relation a copy reads: the table, or one of its partitions (`only`)."""
    if only is None:
        return sql.Identifier(*table.settings.schema_and_table)
    schema, _, name = only.partition(".")
    return sql.Identifier(schema, name)


def count_rows(
    conn: psycopg.Connection[tuple[object, ...]], table: TableInfo, only: str | None = None
) -> int:
    query = sql.SQL("SELECT count(*) FROM {}").format(_relation(table, only))
    row = conn.execute(query).fetchone()
    return int(str(row[0])) if row else 0


def copy_table(
    conn: psycopg.Connection[tuple[object, ...]],
    table: TableInfo,
    batch_rows: int = 2000,
    only: str | None = None,
) -> Iterator[list[RowChange]]:
    """The table's rows (or those of its partition `only`), as insert changes, in batches of
    `batch_rows`. A partitioned table's rows are named after their leaf partition, as
    wal2json names their changes (the manifest records it)."""
    columns = table.columns
    selected: list[sql.Composable] = [
        sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns
    ]
    if table.partitioned:
        selected.append(sql.SQL("tableoid::oid"))
    query = sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(selected), _relation(table, only)
    )
    leaves = _leaf_names(conn, table) if table.partitioned else {}
    types = [table.column_types[c] for c in columns]
    with conn.cursor(name=f"connector_copy_{table.settings.schema_and_table[1]}") as cursor:
        cursor.itersize = batch_rows
        cursor.execute(query)
        while rows := _fetch(cursor, table, batch_rows):
            yield [
                RowChange(
                    Op.INSERT,
                    leaves.get(str(row[-1]), table.name) if leaves else table.name,
                    new={
                        col: PgValue(None if value is None else str(value), kind)
                        for col, kind, value in zip(columns, types, row, strict=False)
                    },
                )
                for row in rows
            ]


def _fetch(
    cursor: psycopg.ServerCursor[tuple[object, ...]], table: TableInfo, rows: int
) -> list[tuple[object, ...]]:
    try:
        return cursor.fetchmany(rows)
    except (
        psycopg.errors.CharacterNotInRepertoire,
        psycopg.errors.UntranslatableCharacter,
    ) as exc:  # the bytes of a SQL_ASCII database, or a client_encoding in postgres.dsn
        raise ConfigError(
            f"table {table.name} holds text the session cannot read as "
            f"{cursor.connection.info.encoding} ({str(exc).strip()}): set "
            'postgres.sql_ascii_encoding to the encoding the applications write ("LATIN1" '
            "reads every byte), or remove client_encoding from postgres.dsn"
        ) from None


def _leaf_names(conn: psycopg.Connection[tuple[object, ...]], table: TableInfo) -> dict[str, str]:
    """oid -> `schema.table` of every partition of a partitioned table."""
    query = sql.SQL(
        "SELECT c.oid::text, n.nspname || '.' || c.relname FROM pg_partition_tree({}::regclass) t "
        "JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace"
    ).format(sql.Literal(sql.Identifier(*table.settings.schema_and_table).as_string(conn)))
    return {str(oid): str(name) for oid, name in conn.execute(query).fetchall()}

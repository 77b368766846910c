"""What the connector must know about each configured table before it streams: that it exists,
its key columns, and that its replica identity lets wal2json carry the key of every UPDATE and
DELETE. A table that would silently lose changes is refused at start, with the fix."""

from __future__ import annotations

import psycopg

from connector.config import TableSettings
from connector.core.tables import TableInfo
from connector.errors import ConfigError

_TABLE = """
SELECT c.oid, c.relreplident
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')
"""
_COLUMNS = """
SELECT attname, format_type(atttypid, atttypmod)
FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum
"""
_INDEX_COLUMNS = """
SELECT a.attname FROM pg_index i
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
WHERE i.indrelid = %s AND {which}
"""


def _index_columns(conn: psycopg.Connection[tuple[object, ...]], oid: int, which: str) -> set[str]:
    rows = conn.execute(_INDEX_COLUMNS.format(which=which), [oid]).fetchall()
    return {str(name) for (name,) in rows}


def inspect_table(conn: psycopg.Connection[tuple[object, ...]], table: TableSettings) -> TableInfo:
    """Look the table up and check it can be followed; raise ConfigError naming the fix."""
    schema, name = table.schema_and_table
    found = conn.execute(_TABLE, [schema, name]).fetchone()
    if found is None:
        raise ConfigError(
            f"table {table.qualified_name} does not exist (or the connector's role cannot see it):"
            " check [[tables]] name, or run `connector migrate`"
        )
    oid, identity = int(str(found[0])), str(found[1])
    types = {str(col): str(kind) for col, kind in conn.execute(_COLUMNS, [oid]).fetchall()}
    missing = [c for c in (*table.content, *table.metadata, *(table.key or [])) if c not in types]
    if missing:
        raise ConfigError(
            f"table {table.qualified_name} has no column {', '.join(missing)}: fix [[tables]] "
            f"content/metadata/key (its columns are {', '.join(types)})"
        )
    primary = _index_columns(conn, oid, "i.indisprimary")
    key = tuple(table.key) if table.key else tuple(c for c in types if c in primary)
    if not key:
        raise ConfigError(
            f"table {table.qualified_name} has no primary key: add one, or set key = [...] in its "
            "[[tables]] section and run ALTER TABLE ... REPLICA IDENTITY FULL"
        )
    _check_identity(conn, table, oid, identity, key)
    return TableInfo(table, key, identity, types)


def _check_identity(
    conn: psycopg.Connection[tuple[object, ...]],
    table: TableSettings,
    oid: int,
    identity: str,
    key: tuple[str, ...],
) -> None:
    if identity == "f":
        return
    if identity == "n":
        raise ConfigError(
            f"table {table.qualified_name} has REPLICA IDENTITY NOTHING: its updates and deletes "
            f"would be lost. Run: ALTER TABLE {table.qualified_name} REPLICA IDENTITY FULL"
        )
    which = "i.indisprimary" if identity == "d" else "i.indisreplident"
    identity_columns = _index_columns(conn, oid, which)
    if not set(key) <= identity_columns or not identity_columns:
        raise ConfigError(
            f"table {table.qualified_name}: its replica identity ({sorted(identity_columns)}) "
            f"does not carry the key columns {list(key)}, so deletes could not be applied. "
            f"Run: ALTER TABLE {table.qualified_name} REPLICA IDENTITY FULL"
        )

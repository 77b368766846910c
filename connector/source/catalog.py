"""What the connector must know about each configured table before it streams: that it exists,
its key columns, and that its replica identity lets wal2json carry the key of every UPDATE and
DELETE. A table that would silently lose changes is refused at start, with the fix.

A partitioned table is followed through its leaf partitions (wal2json names each change after
the leaf it happened in); tables that inherit by INHERITS are refused."""

from __future__ import annotations

import psycopg

from connector.config import TableSettings
from connector.core.tables import TableInfo
from connector.errors import ConfigError
from connector.source.server import check_text_encoding

_TABLE = """
SELECT c.oid, c.relreplident, c.relkind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')
"""
_COLUMNS = """
SELECT attname, format_type(atttypid, atttypmod)
FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum
"""
# Leaf partitions (any depth) of a partitioned table, as wal2json names them.
_LEAVES = """
SELECT c.oid, c.relreplident, n.nspname || '.' || c.relname
FROM pg_partition_tree(%s::oid) t
JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE t.isleaf ORDER BY 3
"""
# Tables that inherit from a table by INHERITS (not partitions).
_INHERITORS = """
SELECT n.nspname || '.' || c.relname
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE i.inhparent = %s AND NOT c.relispartition
"""
# Each relation (schema, name) with itself and its partition ancestors, nearest first.
_ANCESTORS = """
SELECT u.nsp || '.' || u.rel,
       array(SELECT an.nspname || '.' || a.relname
             FROM pg_partition_ancestors(c.oid) WITH ORDINALITY p(relid, n)
             JOIN pg_class a ON a.oid = p.relid JOIN pg_namespace an ON an.oid = a.relnamespace
             ORDER BY p.n)
FROM unnest(%s::text[], %s::text[]) AS u(nsp, rel)
JOIN pg_namespace n ON n.nspname = u.nsp
JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = u.rel
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
    check_text_encoding(conn)  # every reader of a table's text inspects it first
    schema, name = table.schema_and_table
    found = conn.execute(_TABLE, [schema, name]).fetchone()
    if found is None:
        raise ConfigError(
            f"table {table.qualified_name} does not exist (or the connector's role cannot see it):"
            " check [[tables]] name, or run `connector migrate`"
        )
    oid, identity, kind = int(str(found[0])), str(found[1]), str(found[2])
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
    _refuse_inheritance(conn, table, oid)
    if kind != "p":
        _check_identity(conn, table, oid, identity, key)
        return TableInfo(table, key, identity, types)
    leaves = conn.execute(_LEAVES, [oid]).fetchall()
    for leaf_oid, leaf_identity, _name in leaves:
        _check_identity(conn, table, int(str(leaf_oid)), str(leaf_identity), key)
    names = frozenset(str(name) for _oid, _identity, name in leaves)
    return TableInfo(table, key, identity, types, partitioned=True, leaves=names)


def partition_leaves(
    conn: psycopg.Connection[tuple[object, ...]], table: TableInfo
) -> frozenset[str]:
    """The leaf partitions a partitioned table has now."""
    schema, name = table.settings.schema_and_table
    found = conn.execute(_TABLE, [schema, name]).fetchone()
    if found is None:
        return frozenset()
    return frozenset(str(leaf) for _oid, _identity, leaf in conn.execute(_LEAVES, [found[0]]))


def partition_ancestors(
    conn: psycopg.Connection[tuple[object, ...]], relations: list[str]
) -> dict[str, list[str]]:
    """Each relation (`schema.table`, as wal2json names it) with its partition ancestors,
    itself first; a relation that no longer exists is left out."""
    schemas, names = [], []
    for relation in relations:
        schema, _, name = relation.partition(".")
        schemas.append(schema)
        names.append(name)
    rows = conn.execute(_ANCESTORS, [schemas, names]).fetchall()
    return {str(rel): [str(a) for a in ancestors] for rel, ancestors in rows}  # type: ignore[attr-defined]


def _refuse_inheritance(
    conn: psycopg.Connection[tuple[object, ...]], table: TableSettings, oid: int
) -> None:
    children = [str(name) for (name,) in conn.execute(_INHERITORS, [oid]).fetchall()]
    if children:
        raise ConfigError(
            f"table {table.qualified_name} has tables that inherit from it ({', '.join(children)}):"
            " the connector follows declarative partitions (PARTITION BY), not INHERITS, whose "
            "changes are named after each child table. Configure each child table in its own "
            "[[tables]] section (they may share an index), or convert to partitions"
        )


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

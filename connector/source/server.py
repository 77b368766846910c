"""What the connector asks the PostgreSQL server itself: its WAL position, its identity, whether
a table still exists, and the heartbeat message that moves an idle slot."""

from __future__ import annotations

import psycopg

from connector.core.lsn import Lsn

Conn = psycopg.Connection[tuple[object, ...]]


def current_wal_lsn(conn: Conn) -> Lsn:
    row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    return Lsn.parse(str(row[0])) if row else Lsn(0)


def system_identifier(conn: Conn) -> str:
    """The cluster's system id: a checkpoint written for another cluster is never resumed."""
    row = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()
    return str(row[0]) if row else ""


def table_exists(conn: Conn, qualified_name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s)", [qualified_name]).fetchone()
    return row is not None and row[0] is not None


def emit_heartbeat(conn: Conn, prefix: str) -> None:
    """A transactional logical message: it travels down every wal2json slot of the database,
    so an idle slot's position (and the checkpoint) can move past WAL of other tables."""
    conn.execute("SELECT pg_logical_emit_message(true, %s, now()::text)", [prefix])

"""What the connector asks the PostgreSQL server itself: its WAL position, its identity, whether
a table still exists, and the heartbeat message that moves an idle slot."""

from __future__ import annotations

import psycopg
from psycopg import sql

from connector.core.lsn import Lsn
from connector.errors import ConfigError

Conn = psycopg.Connection[tuple[object, ...]]

_SQL_ASCII = (
    "the database's encoding is SQL_ASCII: its text is bytes of no declared encoding, so the "
    "connector cannot tell which characters they are. Set postgres.sql_ascii_encoding "
    "(CONNECTOR_POSTGRES__SQL_ASCII_ENCODING) to the encoding your applications write, e.g. "
    '"UTF8" (or "LATIN1", in which every byte is a character), or move the data to a UTF8 '
    "database"
)


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


def check_text_encoding(conn: Conn) -> None:
    """Refuse a session whose text has no known encoding (a SQL_ASCII database read without
    postgres.sql_ascii_encoding): psycopg would hand its values over as bytes."""
    if conn.info.encoding == "ascii":
        raise ConfigError(_SQL_ASCII)


def server_codec(conn: Conn) -> str:
    """The Python codec of the text wal2json writes: the database's encoding (a replication
    stream is never converted to the client's), or, in a SQL_ASCII database, the encoding
    postgres.sql_ascii_encoding declares (the client encoding of the connector's sessions)."""
    row = conn.execute("SHOW server_encoding").fetchone()
    name = str(row[0]) if row else "UTF8"
    check_text_encoding(conn)
    if name == "SQL_ASCII":
        return conn.info.encoding
    try:
        # psycopg names the codec of a session's client encoding: make it the server's, briefly.
        with conn.transaction():
            conn.execute(sql.SQL("SET LOCAL client_encoding TO {}").format(sql.Literal(name)))
            return conn.info.encoding
    except psycopg.NotSupportedError as exc:
        raise ConfigError(
            f"the database's encoding {name} has no Python codec ({exc}): the connector cannot "
            "decode its changes; move the data to a UTF8 database"
        ) from None

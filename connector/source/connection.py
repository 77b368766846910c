"""Every ordinary Postgres session the connector opens, in one place, named by what it is for.

- `connect(settings, purpose)`: an autocommit session (catalog reads, the monitor's checks and
  heartbeats, TOAST read-backs, `status`, slot commands...), shown as `connector-<purpose>` in
  `pg_stat_activity`;
- `open_snapshot(info, snapshot)`: a REPEATABLE READ, READ ONLY transaction that sees a slot's
  exported snapshot (the copies, `verify`);
- `conninfo(settings, **extra)`: the libpq string every session uses (TLS, TCP keepalives, the
  session options below); the replication connection (source.replication) adds
  `replication=database` to it.

Each session gets UTC timestamps, ISO dates and float digits wal2json prints alike (a copied row
and a streamed one must compare equal), and the statement, lock and idle-in-transaction timeouts
of `[postgres]`, which win over a managed server's low defaults.
"""

from __future__ import annotations

from typing import Literal

import psycopg
from psycopg import sql

from connector.config import PostgresSettings

Conn = psycopg.Connection[tuple[object, ...]]

# What a session is for (its application_name).
Purpose = Literal[
    "catalog", "monitor", "read-back", "partitions", "status", "slot", "replay", "resync",
    "reindex", "history", "migrate", "check",
]  # fmt: skip

_SESSION_OPTIONS = "-c TimeZone=UTC -c DateStyle=ISO,MDY -c extra_float_digits=1"


def conninfo(settings: PostgresSettings, **extra: str) -> str:
    """The libpq connection string: the DSN plus the TLS, keepalive and timeout settings."""
    params: dict[str, str] = {
        "connect_timeout": str(settings.connect_timeout_s),
        # A connection that goes silent (partition, dead host, NAT timeout: no FIN, no RST) must
        # fail within seconds rather than block forever: TCP keepalives for idle sockets, and a
        # bound on unacknowledged sends.
        "keepalives": "1",
        "keepalives_idle": "5",
        "keepalives_interval": "2",
        "keepalives_count": "3",
        "tcp_user_timeout": str(int(settings.stream_timeout_s * 1000)),
    }
    for name in ("sslmode", "sslrootcert", "sslcert", "sslkey"):
        value = getattr(settings, name)
        if value:
            params[name] = value
    params.setdefault("application_name", "connector")
    if settings.sql_ascii_encoding:  # what the bytes of a SQL_ASCII database are
        params["client_encoding"] = settings.sql_ascii_encoding
    params.update(extra)
    dsn = settings.dsn.get_secret_value()
    # The snapshot copy and the stream must print values identically (timestamps above all).
    existing = psycopg.conninfo.conninfo_to_dict(dsn).get("options") or ""
    params["options"] = f"{existing} {_SESSION_OPTIONS} {_timeouts(settings)}".strip()
    return psycopg.conninfo.make_conninfo(dsn, **params)


def _timeouts(settings: PostgresSettings) -> str:
    """Startup options win over the server's, database's and role's defaults: a copy's long
    transaction must not be cut by a managed service's low timeouts."""
    return (
        f"-c statement_timeout={settings.statement_timeout_ms} "
        f"-c lock_timeout={settings.lock_timeout_ms} "
        "-c idle_in_transaction_session_timeout="
        f"{settings.idle_in_transaction_session_timeout_ms}"
    )


def connect(settings: PostgresSettings, purpose: Purpose) -> Conn:
    """An autocommit session for `purpose`."""
    return connect_dsn(conninfo(settings, application_name=f"connector-{purpose}"))


def connect_dsn(dsn: str, autocommit: bool = True) -> Conn:
    """A session from a plain DSN or conninfo string (migrations, the demo, read-backs)."""
    conn: Conn = psycopg.connect(dsn, autocommit=autocommit)
    return conn


def open_snapshot(info: str, snapshot: str | None) -> Conn:
    """A session in a REPEATABLE READ, READ ONLY transaction that sees `snapshot` (an exported
    snapshot name), or a fresh one; `info` is a conninfo string (`conninfo(settings)`) or a DSN."""
    conn = connect_dsn(info, autocommit=False)
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    if snapshot:
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
    return conn

"""`connector check`'s probes of PostgreSQL: its settings, the role, the replication slot and
wal2json, the session timeouts, the encoding (source.server) and each configured table
(source.catalog's own checks, then what they do not refuse: a configured key that is not unique,
the replica identity and what it means for TOASTed content, SELECT, column types)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

import psycopg

from connector.config import Settings, TableSettings
from connector.core.tables import TableInfo
from connector.errors import ConfigError
from connector.flow.start import resync_reason
from connector.ops.check import rules
from connector.ops.check.report import Finding, Report, error, ok, refusal, skipped, warning
from connector.source.catalog import inspect_table
from connector.source.connection import Conn, connect
from connector.source.replication import describe_dsn
from connector.source.server import server_codec
from connector.source.slots import slot_info

PG = "postgres"
_SETTINGS = (
    "server_version_num", "server_version", "wal_level", "max_replication_slots",
    "max_wal_senders", "max_slot_wal_keep_size", "idle_replication_slot_timeout",
    "statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout",
)  # fmt: skip
_TIMEOUTS = ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")
_ROLE = """
SELECT current_user, r.rolreplication, r.rolsuper,
       CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rds_replication')
            THEN pg_has_role(current_user, 'rds_replication', 'member') ELSE false END
FROM pg_roles r WHERE r.rolname = current_user
"""
_DEFAULTS = """
SELECT CASE WHEN s.setrole = 0 THEN 'database' ELSE 'role' END, unnest(s.setconfig)
FROM pg_db_role_setting s
WHERE s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))
  AND s.setrole IN (0, (SELECT oid FROM pg_roles WHERE rolname = current_user))
"""
_UNIQUE_KEYS = """
SELECT array(SELECT a.attname FROM pg_attribute a
             WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey))
FROM pg_index i WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND i.indpred IS NULL
"""
# Rows by the planner's statistics (-1 before the first ANALYZE), with the leaves of a
# partitioned table.
_ROWS = """
SELECT coalesce(sum(c.reltuples) FILTER (WHERE c.reltuples >= 0), -1)
FROM pg_partition_tree(to_regclass(%s)) t JOIN pg_class c ON c.oid = t.relid WHERE t.isleaf
"""
_SAMPLE_ROWS = 200


@dataclass(slots=True)
class TableSample:
    """A configured table's row count (about) and the content text of a few rows: what the
    memory estimate of an index not yet built starts from."""

    settings: TableSettings
    rows: int
    texts: list[str] = field(default_factory=list)


def check_postgres(
    settings: Settings, report: Report, probe_plugin: bool
) -> list[TableSample] | None:
    """Every Postgres finding into `report`; the tables' samples (None: no connection)."""
    try:
        conn = connect(settings.postgres, "check")
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        report.add(error(
            PG, "postgres.dsn", describe_dsn(settings.postgres), f"cannot connect: {first}",
            "check the host, port, database, user and password in postgres.dsn "
            "(CONNECTOR_POSTGRES__DSN), and that the server accepts this client (pg_hba.conf)",
            at_start="daemon",
        ))  # fmt: skip
        return None
    with conn:
        found = _settings(conn)
        version = int(found["server_version_num"][0])
        report.add(rules.server_version(version, found["server_version"][0]))
        report.add(rules.wal_level(found["wal_level"][0]))
        allowed = _role(conn, report)
        _slots(conn, settings, found, report)
        report.add(_wal2json(conn, settings, probe_plugin and allowed, found["wal_level"][0]))
        report.add(_encoding(conn))
        report.add(_timeouts(conn, found))
        return [_table(conn, table, report) for table in settings.tables]


def _settings(conn: Conn) -> dict[str, tuple[str, str | None]]:
    rows = conn.execute(
        "SELECT name, setting, unit FROM pg_settings WHERE name = ANY(%s)", [list(_SETTINGS)]
    ).fetchall()
    return {str(name): (str(value), str(unit) if unit else None) for name, value, unit in rows}


def _role(conn: Conn, report: Report) -> bool:
    row = conn.execute(_ROLE).fetchone()
    assert row is not None
    role, replication, superuser, rds = str(row[0]), bool(row[1]), bool(row[2]), bool(row[3])
    how = "REPLICATION" if replication else "superuser" if superuser else "rds_replication"
    allowed = replication or superuser or rds
    report.add(rules.replication_role(role, allowed, how))
    return allowed


def _slots(
    conn: Conn, settings: Settings, found: dict[str, tuple[str, str | None]], report: Report
) -> None:
    slot = settings.postgres.slot
    row = conn.execute(
        "SELECT count(*), coalesce(bool_or(slot_name = %s), false), "
        "coalesce(bool_or(slot_name = %s AND active), false) FROM pg_replication_slots",
        [slot, slot],
    ).fetchone()
    assert row is not None
    used, ours, active = int(str(row[0])), bool(row[1]), bool(row[2])
    senders = conn.execute("SELECT count(*) FROM pg_stat_replication").fetchone()
    limit = int(found["max_replication_slots"][0])
    report.add(rules.replication_slots(limit, used, ours, slot))
    wal_senders = int(found["max_wal_senders"][0])
    report.add(rules.wal_senders(wal_senders, int(str(senders[0])) if senders else 0, active))
    keep, unit = found["max_slot_wal_keep_size"]
    report.add(rules.wal_keep_size(rules.in_base_unit(keep, unit),
                                   settings.pipeline.max_retained_wal_bytes))  # fmt: skip
    if "idle_replication_slot_timeout" in found:
        idle, unit = found["idle_replication_slot_timeout"]
        report.add(rules.idle_slot_timeout(rules.in_base_unit(idle, unit)))


def _wal2json(conn: Conn, settings: Settings, probe: bool, level: str) -> Finding:
    """wal2json: the plugin of the connector's slot, or a temporary slot made with it."""
    slot = settings.postgres.slot
    info = slot_info(conn, slot)
    if info is not None:
        try:
            resync_reason(info, None, "")
        except ConfigError as exc:
            return refusal(PG, "wal2json", f"slot {slot} uses {info.plugin}", str(exc), "daemon")
        return ok(PG, "wal2json", f"slot {slot}", "the connector's slot decodes with wal2json")
    if not probe or level != "logical":
        return skipped(PG, "wal2json",
                       "needs wal_level = logical and a role with REPLICATION (or run at start: "
                       "the daemon's first slot says it)")  # fmt: skip
    temporary = f"connector_check_{os.getpid()}"
    try:
        with conn.transaction():  # SET LOCAL: a slot waits for running transactions
            conn.execute("SET LOCAL statement_timeout = '10s'")
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'wal2json', true)",
                         [temporary])  # fmt: skip
            conn.execute("SELECT pg_drop_replication_slot(%s)", [temporary])
    except psycopg.errors.UndefinedFile:
        return error(PG, "wal2json", "not installed",
                     "the server has no wal2json output plugin: the connector cannot decode "
                     "changes", "install it on the server (apt install postgresql-<version>-"
                     "wal2json; RDS, Cloud SQL and Azure ship it)")  # fmt: skip
    except psycopg.errors.QueryCanceled:
        return warning(PG, "wal2json", "not checked",
                       "a test slot waited 10s for running transactions to end",
                       "run `connector check` again when the server is quieter")  # fmt: skip
    except psycopg.Error as exc:
        return warning(
            PG,
            "wal2json",
            "not checked",
            f"a test slot failed: {exc}".strip(),
            "look at the message; the daemon's first slot will fail the same way",
        )
    return ok(PG, "wal2json", "installed", "a test slot decoded with wal2json (and was dropped)")


def _encoding(conn: Conn) -> Finding:
    row = conn.execute("SHOW server_encoding").fetchone()
    name = str(row[0]) if row else "?"
    try:
        codec = server_codec(conn)
    except ConfigError as exc:
        return refusal(PG, "server_encoding", name, str(exc), "refuse")
    return ok(PG, "server_encoding", name, f"changes are decoded as {codec}")


def _timeouts(conn: Conn, found: dict[str, tuple[str, str | None]]) -> Finding:
    effective = {name: rules.in_base_unit(*found[name]) for name in _TIMEOUTS}
    defaults = [
        f"{where} {entry}"
        for where, entry in conn.execute(_DEFAULTS).fetchall()
        if str(entry).split("=")[0] in _TIMEOUTS
    ]
    return rules.session_timeouts(effective, defaults)


def _table(conn: Conn, table: TableSettings, report: Report) -> TableSample:
    name = table.qualified_name
    setting = f"tables[{name}]"
    try:
        info = inspect_table(conn, table)
    except ConfigError as exc:
        report.add(refusal("tables", setting, name, str(exc), "refuse"))
        return TableSample(table, 0)
    report.add(_shape(conn, info, setting))
    report.add(_identity(info, setting))
    row = conn.execute("SELECT has_table_privilege(to_regclass(%s), 'SELECT')", [name]).fetchone()
    if not (row and row[0]):
        report.add(error("tables", f"{setting} SELECT", "not granted",
                         "the role cannot read the table: a copy, a resync and the read-back of "
                         "TOASTed content fail", f"GRANT SELECT ON {name} TO <the connector's "
                         "role>", at_start="warn"))  # fmt: skip
        return TableSample(table, 0)
    report.add(rules.column_types(name, dict(table.metadata), info.column_types))
    return _sample(conn, info)


def _shape(conn: Conn, info: TableInfo, setting: str) -> Finding:
    key = ", ".join(info.key)
    kind = f"partitioned, {len(info.leaves)} leaf partitions" if info.partitioned else "a table"
    if not info.settings.key:
        return ok("tables", setting, f"key ({key}), {kind}",
                  "rows are keyed by the primary key" + _leaves(info))  # fmt: skip
    unique = [set(map(str, cols)) for (cols,) in conn.execute(_UNIQUE_KEYS, [info.name])]  # type: ignore[call-overload]
    if set(info.key) in unique:
        return ok(
            "tables",
            setting,
            f"key ({key}), {kind}",
            "the configured key is a unique key of the table" + _leaves(info),
        )
    return error(
        "tables", f"{setting}.key", f"({key})",
        "no unique index (nor primary key) has exactly these columns: two rows with the same "
        "key would be one document in the index, each change overwriting the other",
        f"CREATE UNIQUE INDEX ON {info.name} ({key}), or set key to the columns of a unique key",
        at_start="warn",
    )  # fmt: skip


def _leaves(info: TableInfo) -> str:
    if not info.partitioned:
        return ""
    return "; changes arrive under each leaf partition's name and are indexed under the table"


def _identity(info: TableInfo, setting: str) -> Finding:
    names = {"d": "default (the primary key)", "i": "an index", "f": "full"}
    value = names.get(info.replica_identity, info.replica_identity)
    where = f"{setting} replica identity"
    if info.full_identity:
        return ok(
            "tables",
            where,
            value,
            "every UPDATE and DELETE carries the whole old row (more WAL): no read-back",
        )
    return ok(
        "tables", where, value,
        "an UPDATE that leaves a large (TOASTed) content column unchanged does not carry its "
        "text: the connector reads it back from the table by key (one query per such row); "
        "REPLICA IDENTITY FULL avoids that at the cost of more WAL",
    )  # fmt: skip


def _sample(conn: Conn, info: TableInfo) -> TableSample:
    row = conn.execute(_ROWS, [info.name]).fetchone()
    rows = int(float(str(row[0]))) if row and row[0] is not None else -1
    columns = psycopg.sql.SQL(", ").join(psycopg.sql.Identifier(c) for c in info.settings.content)
    schema, table = info.settings.schema_and_table
    query = psycopg.sql.SQL("SELECT {} FROM {} LIMIT {}").format(
        columns, psycopg.sql.Identifier(schema, table), psycopg.sql.Literal(_SAMPLE_ROWS)
    )
    texts = []
    with contextlib.suppress(psycopg.Error):
        for values in conn.execute(query):
            texts.append("\n\n".join(str(v) for v in values if v is not None))
    if rows < 0:  # never analysed: count (a new or small table), for a few seconds at most
        count = psycopg.sql.SQL("SELECT count(*) FROM {}").format(
            psycopg.sql.Identifier(schema, table)
        )
        rows = 0
        with contextlib.suppress(psycopg.errors.QueryCanceled), conn.transaction():
            conn.execute("SET LOCAL statement_timeout = '5s'")
            found = conn.execute(count).fetchone()
            rows = int(str(found[0])) if found else 0
    return TableSample(info.settings, rows, texts)

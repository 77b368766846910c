"""What a setting's value means for the connector (pure): each rule takes what a probe read and
returns the finding, with the fix. The probes (check.postgres, check.redis, check.providers)
read; nothing here does I/O."""

from __future__ import annotations

from connector.ops.check.report import Finding, error, ok, warning

PG = "postgres"
# The oldest PostgreSQL the connector reads: pg_replication_slots.wal_status (13).
MIN_SERVER = 130000
_UNIT_FACTORS = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000,
                 "B": 1, "kB": 1024, "8kB": 8192, "MB": 1 << 20, "GB": 1 << 30}  # fmt: skip
# Types whose values a NUMERIC field holds (text that looks like a number works too).
_NUMERIC_TYPES = ("smallint", "integer", "bigint", "real", "double precision", "numeric",
                  "boolean", "date", "timestamp", "oid", "money")  # fmt: skip


def in_base_unit(setting: str, unit: str | None) -> int:
    """A pg_settings value in milliseconds or bytes (`unit` as pg_settings gives it)."""
    value = int(float(setting))
    return value if value < 0 else value * _UNIT_FACTORS.get(unit or "", 1)


def describe_bytes(value: int) -> str:
    if value >= 1 << 30:
        return f"{value / (1 << 30):.1f} GB"
    return f"{value / (1 << 20):.1f} MB"


def server_version(number: int, text: str) -> Finding:
    if number < MIN_SERVER:
        return error(PG, "server_version", text,
                     "the connector needs PostgreSQL 13 or later (it reads the slot's WAL status)",
                     "upgrade PostgreSQL")  # fmt: skip
    extra = (
        " (idle_replication_slot_timeout can invalidate an idle slot)" if number >= 180000 else ""
    )
    return ok(PG, "server_version", text, f"logical decoding with wal2json is supported{extra}")


def wal_level(value: str) -> Finding:
    if value == "logical":
        return ok(PG, "wal_level", value, "the WAL carries what logical decoding needs")
    return error(
        PG, "wal_level", value,
        "logical decoding is off: the connector cannot create its replication slot, and would "
        "retry forever",
        "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL (managed services: "
        "rds.logical_replication = 1 on RDS/Aurora, cloudsql.logical_decoding = on on Cloud SQL, "
        "wal_level = logical in Azure's server parameters)",
    )  # fmt: skip


def replication_slots(limit: int, used: int, ours: bool, slot: str) -> Finding:
    value = f"{limit} ({used} in use)"
    if ours:
        return ok(PG, "max_replication_slots", value, f"slot {slot} exists: it is used again")
    if used >= limit:
        return error(PG, "max_replication_slots", value,
                     f"no slot is free for slot {slot}: the connector cannot create it",
                     "drop a slot nothing uses (SELECT pg_drop_replication_slot(...)) or raise "
                     "max_replication_slots (a restart applies it)", at_start="warn")  # fmt: skip
    return ok(PG, "max_replication_slots", value,
              f"{limit - used} free: the first start creates slot {slot}")  # fmt: skip


def wal_senders(limit: int, active: int, ours_active: bool) -> Finding:
    value = f"{limit} ({active} in use)"
    if not ours_active and active >= limit:
        return error(PG, "max_wal_senders", value,
                     "no WAL sender is free: the connector's replication connection is refused",
                     "raise max_wal_senders (a restart applies it), or stop an idle replication "
                     "client", at_start="warn")  # fmt: skip
    return ok(PG, "max_wal_senders", value, "a replication connection is free for the connector")


def wal_keep_size(limit_bytes: int, warn_at: int) -> Finding:
    """max_slot_wal_keep_size (-1: unlimited) against pipeline.max_retained_wal_bytes."""
    setting = "max_slot_wal_keep_size"
    if limit_bytes < 0:
        return ok(PG, setting, "-1 (unlimited)",
                  "a slot that falls behind (the connector stopped or slow) keeps WAL until the "
                  "disk fills; the connector warns past pipeline.max_retained_wal_bytes "
                  f"({describe_bytes(warn_at)}): watch `connector status` or the "
                  "connector_retained_wal_bytes metric")  # fmt: skip
    meaning = (f"a slot more than {describe_bytes(limit_bytes)} behind is invalidated "
               "(wal_status lost): the connector then copies the tables again")  # fmt: skip
    if limit_bytes <= warn_at:
        return warning(PG, setting, describe_bytes(limit_bytes),
                       meaning + ", before its own warning at pipeline.max_retained_wal_bytes "
                       f"({describe_bytes(warn_at)}) fires",
                       "set pipeline.max_retained_wal_bytes below max_slot_wal_keep_size (e.g. "
                       "half of it), or raise max_slot_wal_keep_size")  # fmt: skip
    return ok(PG, setting, describe_bytes(limit_bytes), meaning)


def idle_slot_timeout(ms: int) -> Finding:
    setting = "idle_replication_slot_timeout"
    if ms <= 0:
        return ok(PG, setting, "0 (off)", "an idle slot is never invalidated for being idle")
    return warning(
        PG, setting, f"{ms // 1000}s",
        f"a slot no connector streams from for {ms // 1000}s (the connector stopped, an "
        "upgrade, an outage) is invalidated at the next checkpoint: the connector then copies "
        "the tables again",
        "set it to 0, or longer than the connector may ever be stopped",
    )  # fmt: skip


def replication_role(role: str, allowed: bool, how: str) -> Finding:
    if allowed:
        return ok(PG, "role REPLICATION", role, f"the role may stream changes ({how})")
    return error(
        PG, "role REPLICATION", role,
        "the role may not open a replication connection: the connector cannot stream",
        f"ALTER ROLE {role} REPLICATION (RDS/Aurora: GRANT rds_replication TO {role}), or "
        "connect as a role that has it (postgres.dsn)",
        at_start="warn",
    )  # fmt: skip


def session_timeouts(effective_ms: dict[str, int], defaults: list[str]) -> Finding:
    """The timeouts the connector's sessions run with (its own settings over the server's,
    database's and role's defaults, listed in `defaults`)."""
    setting = "statement_timeout, lock_timeout, idle_in_transaction_session_timeout"
    value = ", ".join(f"{ms}ms" for ms in effective_ms.values())
    overridden = f" (over the defaults {'; '.join(defaults)})" if defaults else ""
    cutting = [name for name, ms in effective_ms.items() if ms > 0]
    if cutting:
        return warning(
            PG, setting, value,
            f"the connector's sessions run with {', '.join(cutting)} set{overridden}: a copy is "
            "one long transaction, idle while each batch is embedded, and would be cut (it then "
            "starts again)",
            "set postgres.statement_timeout_ms, lock_timeout_ms and "
            "idle_in_transaction_session_timeout_ms to 0 (off), or long enough for a whole copy",
        )  # fmt: skip
    return ok(
        PG,
        setting,
        value,
        f"the connector's sessions set these off{overridden}: a long copy is not cut",
    )


def column_types(table: str, metadata: dict[str, str], types: dict[str, str]) -> list[Finding]:
    """Metadata columns whose type the index field of their kind cannot hold."""
    found = []
    for column, kind in metadata.items():
        base = types.get(column, "").split("(")[0].removesuffix("[]").strip()
        numeric = base.startswith(_NUMERIC_TYPES) or base in ("text", "character varying")
        if kind == "numeric" and not numeric:
            found.append(warning(
                "tables", f"tables[{table}].metadata.{column}", f"numeric on {types[column]}",
                "a NUMERIC field holds numbers, booleans, dates and timestamps: these values "
                "are left out of the field (filters on it never match them)",
                f'make it a tag (metadata.{column} = "tag"), or index a numeric column',
            ))  # fmt: skip
    return found


def aof(wait_aof: bool, appendonly: bool | None, appendfsync: str | None) -> Finding:
    setting = "appendonly, appendfsync (redis.wait_aof)"
    value = f"{_yes(appendonly)}, {appendfsync or '?'} (wait_aof = {str(wait_aof).lower()})"
    if appendonly is None:
        return warning("redis", setting, value,
                       "could not read the AOF settings (CONFIG GET refused on this server)",
                       "make sure appendonly is yes when redis.wait_aof is true")  # fmt: skip
    if not wait_aof:
        return ok(
            "redis",
            setting,
            value,
            "changes are confirmed to Postgres once Redis holds them in memory: a Redis "
            "crash can lose the last ones, which the connector notices and copies again",
        )
    if not appendonly:
        return warning(
            "redis", setting, value,
            "no append-only file: the connector cannot wait for Redis to have a change on disk "
            "before confirming it to Postgres; a Redis restart loses the index (the connector "
            "copies the tables again)",
            "CONFIG SET appendonly yes (and in redis.conf), or set redis.wait_aof = false to "
            "accept it",
        )  # fmt: skip
    if appendfsync == "no":
        return warning(
            "redis", setting, value,
            "the OS writes the AOF to disk when it chooses (about every 30s): what the "
            "connector confirmed may not be on disk at a power loss",
            "CONFIG SET appendfsync everysec (and in redis.conf)",
        )  # fmt: skip
    return ok(
        "redis",
        setting,
        value,
        "each confirmed change is on disk first (WAITAOF): a Redis restart loses nothing",
    )


def cluster(enabled: bool, configured: bool) -> Finding:
    value = f"cluster_enabled {int(enabled)} (redis.cluster = {str(configured).lower()})"
    if enabled == configured:
        return ok("redis", "redis.cluster", value, "the client speaks the server's mode")
    if enabled:
        return error(
            "redis",
            "redis.cluster",
            value,
            "this is a Redis Cluster node: a plain client's writes to keys of other "
            "shards fail (MOVED)",
            "set redis.cluster = true",
            at_start="warn",
        )
    return error("redis", "redis.cluster", value,
                 "this server is not a cluster: the cluster client cannot connect",
                 "set redis.cluster = false", at_start="warn")  # fmt: skip


def _yes(value: bool | None) -> str:
    return "?" if value is None else ("yes" if value else "no")


def memory(limit: int, used: int, adding: int, rebuild: int) -> Finding:
    """maxmemory against what the indexes will add (`adding`: those not built yet, rebuilds
    the start makes) and the largest rebuild a `connector reindex` would need (`rebuild`)."""
    setting = "maxmemory"
    value = f"{describe_bytes(limit)} ({describe_bytes(used)} used)" if limit else "0 (none)"
    need = f"the indexes need about {describe_bytes(adding)} more" if adding else ""
    room = (
        f"a rebuild needs about {describe_bytes(rebuild)} more while both indexes exist"
        if rebuild
        else ""
    )
    said = "; ".join(part for part in (need, room) if part)
    if not limit:
        return ok(
            "redis",
            setting,
            value,
            f"no limit: Redis grows until the machine's memory runs out ({said})",
        )
    fix = (f"raise maxmemory to at least {describe_bytes(used + adding + rebuild)} "
           "(CONFIG SET maxmemory, and in redis.conf), or give Redis more memory")  # fmt: skip
    if used + adding > limit:
        return error(
            "redis", setting, value,
            f"{need or 'Redis is full'}: Redis would reach maxmemory, refuse the writes, and "
            "the connector would pause until memory is freed",
            fix, at_start="warn",
        )  # fmt: skip
    if used + adding + rebuild > limit:
        return warning("redis", setting, value,
                       f"{said}: a rebuild (`connector reindex`, reindex.auto) would not fit",
                       fix)  # fmt: skip
    return ok("redis", setting, value, f"{said}: it fits")

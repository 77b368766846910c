"""`connector status`: where the slot is, where the index is, and how far apart they are."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from connector.config import Settings
from connector.core.engine import EngineProfile
from connector.core.keys import stats_key
from connector.core.lsn import Lsn
from connector.sink.checkpoint import read_checkpoint
from connector.sink.engine import read_profile
from connector.sink.failing import read_failing
from connector.sink.layout import current_specs, read_record
from connector.sink.memory import eviction_policy, judge_policy, memory_usage
from connector.sink.redis_client import client_for, command, text
from connector.sink.schema import IndexSpec, read_meta
from connector.sink.view import read_view, scan_manifests
from connector.source.connection import connect
from connector.source.replication import describe_dsn
from connector.source.server import current_wal_lsn
from connector.source.slots import slot_info


@dataclass
class IndexStatus:
    name: str
    rows: int
    chunks: int  # documents in the RediSearch index
    dead_letters: int
    expected_chunks: int = 0  # chunk hashes the rows' visible and pending versions list
    missing_chunks: int = 0  # of those, the ones Redis no longer holds
    superseded: int = 0  # row versions no reader needs any more: garbage collection's backlog
    vector: str = ""  # the vector options the index was built with (its P:meta)
    vector_memory_mb: float = 0.0  # FT.INFO vector_index_sz_mb
    physical: str = ""  # the physical index the alias points at
    model: str = ""  # provider/model (dimensions) it was built with
    rebuild: str = ""  # a rebuild in progress: into what, how far
    retiring: str = ""  # the index before the last switch, being dropped


@dataclass
class Status:
    postgres: str
    slot: str
    slot_exists: bool
    slot_active: bool = False
    wal_status: str | None = None
    confirmed_flush_lsn: str | None = None
    restart_lsn: str | None = None
    current_wal_lsn: str | None = None
    retained_wal_bytes: int | None = None
    redis_memory: str | None = None
    # The server and its modules' versions, and the scorer full-text queries name (core.engine)
    engine: EngineProfile | None = None
    eviction_policy: str | None = None
    checkpoint_lsn: str | None = None
    checkpoint_age_s: float | None = None
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    indexes: list[IndexStatus] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    # Tables whose changes are being dead-lettered (flow.health): table, cause, fix, since...
    failing: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        shown = asdict(self)
        shown["engine"] = self.engine.as_dict() if self.engine is not None else None
        return shown


def _fill_slot(status: Status, settings: Settings) -> Lsn:
    with connect(settings.postgres, "status") as conn:
        info = slot_info(conn, settings.postgres.slot)
        current = current_wal_lsn(conn)
    status.current_wal_lsn = str(current)
    if info is None:
        status.warnings.append(
            f"slot {settings.postgres.slot} does not exist: the next `connector run` creates it "
            "and copies the tables"
        )
        return current
    status.slot_exists = True
    status.slot_active = info.active
    status.wal_status = info.wal_status
    status.confirmed_flush_lsn = str(info.confirmed_flush_lsn) if info.confirmed_flush_lsn else None
    status.restart_lsn = str(info.restart_lsn) if info.restart_lsn else None
    if info.restart_lsn:
        status.retained_wal_bytes = current.value - info.restart_lsn.value
        limit = settings.pipeline.max_retained_wal_bytes
        if status.retained_wal_bytes > limit:
            status.warnings.append(
                f"the slot retains {status.retained_wal_bytes} bytes of WAL (more than "
                f"pipeline.max_retained_wal_bytes = {limit}): is the connector running?"
            )
    if info.wal_status == "lost":
        status.warnings.append("the slot is invalidated (wal_status lost): run `connector resync`")
    return current


def _fill_index(status: Status, settings: Settings, current: Lsn) -> None:
    client = client_for(settings.redis)
    try:
        _fill_memory(status, settings, client)
        checkpoint = read_checkpoint(client, settings.postgres.slot)
        if checkpoint is not None:
            status.checkpoint_lsn = str(checkpoint.lsn)
            status.checkpoint_age_s = round(time.time() - checkpoint.updated_at, 3)
            status.lag_bytes = max(current.value - checkpoint.lsn.value, 0)
            commit_time = checkpoint.commit_time or checkpoint.updated_at
            status.lag_seconds = round(time.time() - commit_time, 3) if status.lag_bytes else 0.0
            if checkpoint.replaced:
                status.warnings.append(
                    f"the indexes are being rebuilt for another history of the source "
                    f"({checkpoint.replaced}): searches answer from the old indexes until the "
                    "switch; the daemon does it by itself"
                )
        specs = current_specs(client, settings)
        _fill_failing(status, client, settings.postgres.slot, specs)
        for spec in specs.values():
            index = _index_status(client, spec, settings.postgres.slot)
            status.indexes.append(index)
            if index.missing_chunks:
                present = index.expected_chunks - index.missing_chunks
                status.warnings.append(
                    f"index {index.name} holds {present} chunks but its row manifests list "
                    f"{index.expected_chunks}: keys were lost (eviction? see maxmemory-policy). "
                    "Run `connector verify --repair`"
                )
        if checkpoint is None:
            built = any(index.rows or index.expected_chunks for index in status.indexes)
            status.warnings.append(
                "Redis holds no checkpoint but the index has rows: Redis lost it (eviction, "
                "FLUSHALL, restart without persistence); the next `connector run` resynchronises"
                if built
                else "Redis holds no checkpoint: the index has not been built"
            )
        raw = client.hgetall(stats_key(settings.postgres.slot))
        status.counters = {text(k): int(float(text(v))) for k, v in raw.items()}
    finally:
        client.close()


def _fill_failing(
    status: Status, client: redis.Redis, slot: str, specs: dict[str, IndexSpec]
) -> None:
    """The failing tables the daemon recorded; an episode on an index since rebuilt is over."""
    current = {spec.name: spec.physical_name for spec in specs.values()}
    for failing in read_failing(client, slot).values():
        if current.get(failing.index) == failing.physical:
            status.failing.append(asdict(failing))
            status.warnings.append(failing.describe())


def _fill_memory(status: Status, settings: Settings, client: redis.Redis) -> None:
    status.engine = read_profile(client)
    status.redis_memory = memory_usage(client)
    status.eviction_policy = eviction_policy(client)
    verdict = judge_policy(status.eviction_policy, settings.redis.allow_eviction)
    if verdict.level != "ok":
        status.warnings.append(verdict.message)


def _index_status(client: redis.Redis, spec: IndexSpec, slot: str) -> IndexStatus:
    try:
        info = command(client, "FT.INFO", spec.name)
    except redis.ResponseError:  # no index yet
        info = {}
    chunks = int(info.get(b"num_docs", 0)) if isinstance(info, dict) else 0
    memory = float(info.get(b"vector_index_sz_mb", 0) or 0) if isinstance(info, dict) else 0.0
    view = read_view(client, slot, spec.keys, spec.tables)
    rows = superseded = 0
    listed: list[str] = []
    for key, manifest in scan_manifests(client, spec.keys):
        table = spec.keys.table_of_row(key)
        rows += view.current(table, manifest) is not None
        at = manifest.at(view.visible)
        live = [v for v in manifest.versions if at is None or v.lsn >= at.lsn]
        superseded += len(manifest.versions) - len(live)
        row = spec.keys.key_from_row(key, table)
        listed += {spec.keys.chunk(table, row, c) for v in live for c in v.chunks}
    missing = _count_missing(client, listed)
    dead = int(client.xlen(spec.deadletter))
    meta = read_meta(client, spec)
    model = f"{meta.get('provider')}/{meta.get('model')} ({meta.get('dimensions')} dimensions)"
    index = IndexStatus(spec.name, rows, chunks, dead, len(listed), missing, superseded,
                        meta.get("vector", ""), memory, spec.physical_name, model)  # fmt: skip
    record = read_record(client, spec.name)
    if record is not None and record.building is not None:
        done = f"{record.rows_done}/{record.rows_total} rows" if record.rows_total else "starting"
        index.rebuild = f"into {record.building.name}, {record.phase}: {done} ({record.reason})"
    if record is not None and record.retiring is not None:
        index.retiring = record.retiring.name
    return index


def _count_missing(client: redis.Redis, keys: list[str], batch: int = 1000) -> int:
    missing = 0
    for start in range(0, len(keys), batch):
        pipe = client.pipeline(transaction=False)
        for key in keys[start : start + batch]:
            pipe.exists(key)
        missing += sum(1 for found in pipe.execute() if not found)
    return missing


def collect_status(settings: Settings) -> Status:
    status = Status(describe_dsn(settings.postgres), settings.postgres.slot, False)
    current = _fill_slot(status, settings)
    _fill_index(status, settings, current)
    return status


def render(status: Status) -> str:
    slot = "missing"
    if status.slot_exists:
        slot = f"{'active' if status.slot_active else 'inactive'}, wal_status {status.wal_status}"
    lines = [
        f"postgres            {status.postgres}",
        f"slot                {status.slot} ({slot})",
        f"  confirmed flush   {status.confirmed_flush_lsn}",
        f"  restart LSN       {status.restart_lsn}",
        f"  retained WAL      {_bytes(status.retained_wal_bytes)}",
        f"current WAL         {status.current_wal_lsn}",
        f"redis               {status.engine.describe() if status.engine else 'unknown'}",
        f"redis memory        {status.redis_memory}",
        f"checkpoint (Redis)  {status.checkpoint_lsn} (written {status.checkpoint_age_s}s ago)",
        f"lag                 {_bytes(status.lag_bytes)}, {status.lag_seconds}s since the last "
        "applied commit",
    ]
    for index in status.indexes:
        lines.append(
            f"index {index.name:<13} {index.rows} rows, {index.chunks} chunks (manifests list "
            f"{index.expected_chunks}), {index.dead_letters} dead letters; vectors "
            f"{index.vector or 'unknown'}, {index.vector_memory_mb:.1f} MB"
        )
        lines.append(f"  answers from      {index.physical}, built with {index.model}")
        if index.rebuild:
            lines.append(f"  rebuilding {index.rebuild}")
        if index.retiring:
            lines.append(f"  dropping          {index.retiring} (the index before the switch)")
        for failing in status.failing:
            if failing["index"] == index.name:
                lines.append(f"  FAILING table     {failing['table']}: {failing['dead_letters']} "
                             "changes dead-lettered (see WARNING below)")  # fmt: skip
    if status.counters:
        lines.append(
            "counters            " + ", ".join(f"{k}={v}" for k, v in status.counters.items())
        )
    lines += [f"WARNING: {w}" for w in status.warnings]
    return "\n".join(lines)


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value = value / 1024  # type: ignore[assignment]
    return str(value)

"""Index names as aliases of physical indexes, and what each physical index was built with.

Queries (`search()`, `answer()`, the CLI, any external client) use the configured index name: a
RediSearch alias (FT.ALIASADD) of a physical index with a key prefix of its own. The first
physical index of a name, `<name>.v1`, keeps the name as its prefix, so an index an earlier
connector built under the name itself is adopted as it is (Redis indexes its hashes again under
`<name>.v1`; nothing is embedded or copied). A rebuild (flow.rebuild) makes `<name>.v2` under the
prefix `<name>.v2`, and so on, and switches the alias to it in one step.

Names and owners: index names never hold a `.` (config refuses it), so no index name is another
index's physical name or key prefix (`articles` and `articles_v2` are two indexes, whatever is
rebuilt). Connectors before this one named rebuilt indexes `<name>_v<N>`: their records keep
those names, and an index name one of them uses is refused (`_refuse_claimed`). Adoption only
takes an index that is provably a connector's under its own name. Each physical index records
its owner, the slot that writes it (and the database system id), in its meta: a connector of
another slot refuses to write it (`claim`) until `connector slot take-over` hands it over.

The alias's record, `connector:index:<name>` (a hash), says which physical index is current,
which one a rebuild is building and how far it got, and which one is being dropped. Each physical
index's meta (`<prefix>:meta`) says what it was built with: the model, each table's settings and
the schema's metadata fields. The daemon compares that with its settings when it starts
(`compare`): metadata columns added or removed are changed in place; anything else needs a
rebuild.

Words of an index's life, used throughout the code:

- index name, or alias: what the settings (`[[tables]] index`) and every query name; a
  RediSearch alias of one physical index at a time, never an index itself.
- physical index: one FT index, `<name>.v<N>`, over the keys of its own prefix (their layout:
  core.keys.Keyspace).
- record: the alias's hash, `connector:index:<name>` (`Record`): which physical index is
  current, building and retiring, the rebuild's progress, and the generation.
- built: what a physical index was built with (`Built`, kept in its meta);
  `built_from_settings` is what the settings ask for, and `compare` what getting there takes.
- building: the physical index a rebuild (flow.rebuild) copies into; every change is written to
  it and to the current one until the switch moves the alias to it in one step.
- retiring: the physical index before the last switch, dropped in steps between batches.
- generation: a number in the record bumped at each change a searcher must notice (a switch,
  an FT.ALTER): a searcher that sees it move reads the record again.
- layout: one index name as the daemon starts with it (flow.targets.Layout): its record, what
  its current index was built with, what a rebuild builds.
- target: the physical indexes written with one model (flow.targets.Target): the current ones,
  or a rebuild's new one; each target has its own writer, planner and collector (flow.applier).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import redis

from connector.config import Settings, TableSettings, VectorSettings
from connector.core.keys import Keyspace, alias_key, deadletter_key
from connector.core.lsn import Lsn
from connector.errors import ConfigError, RedisIndexError
from connector.sink.redis_client import Fields, command, text
from connector.sink.schema import (
    RESERVED_FIELDS,
    SCHEMA_VERSION,
    IndexSpec,
    Model,
    check_server_supports,
    describe_vector,
    embedding_meta,
    field_args,
    index_specs,
    schema_args,
)

log = logging.getLogger(__name__)

_FIELD_KINDS = {"TAG": "tag", "NUMERIC": "numeric", "TEXT": "text"}
# How long the adoption of an earlier connector's index may take Redis to index it again.
_ADOPT_TIMEOUT_S = 3600.0


@dataclass(frozen=True, slots=True)
class Physical:
    """A physical index and the prefix of its keys."""

    name: str
    prefix: str


@dataclass(frozen=True, slots=True)
class Owner:
    """Who writes a physical index: the connector of `slot`, following the database of
    `system_id` ("" when not known)."""

    slot: str
    system_id: str = ""

    def describe(self) -> str:
        known = f" (database system id {self.system_id})" if self.system_id else ""
        return f"slot {self.slot}{known}"


@dataclass(frozen=True, slots=True)
class Built:
    """What a physical index was built with (or is to be built with)."""

    provider: str
    model: str
    dimensions: int
    tables: tuple[TableSettings, ...]
    fields: dict[str, str]  # the schema's metadata fields (a removed column stays until a rebuild)

    @property
    def vector(self) -> VectorSettings:
        return self.tables[0].vector

    @property
    def model_id(self) -> tuple[str, str, int]:
        return (self.provider, self.model, self.dimensions)

    def describe_model(self) -> str:
        return f"{self.provider}/{self.model} ({self.dimensions} dimensions)"

    def spec(self, alias: str, physical: Physical) -> IndexSpec:
        names = tuple(t.qualified_name for t in self.tables)
        return IndexSpec(
            alias, dict(self.fields), names, self.vector, physical.name, physical.prefix
        )

    def meta(self) -> Fields:
        fields: Fields = {}
        fields.update(embedding_meta(self, self.vector))
        fields["tables"] = json.dumps([t.model_dump(mode="json") for t in self.tables])
        fields["fields"] = json.dumps(self.fields)
        return fields


@dataclass(frozen=True, slots=True)
class Record:
    """An alias's record: its physical indexes and the rebuild in progress."""

    alias: str
    current: Physical
    generation: int = 0  # bumped at each change a searcher must see (a switch, FT.ALTER)
    serial: int = 1  # the number of the newest physical index
    building: Physical | None = None
    phase: str = ""  # copying, then copied (at `at`), then the switch
    at: Lsn | None = None
    rows_done: int = 0
    rows_total: int = 0
    started: float = 0.0
    reason: str = ""
    retiring: Physical | None = None  # the index before the last switch, dropped in steps
    retired_at: float = 0.0
    backfill: tuple[str, ...] = ()  # tables whose rows lack a metadata column added in place

    @property
    def written(self) -> tuple[Physical, ...]:
        """The physical indexes the connector writes: the current one and a rebuild's."""
        return (self.current,) if self.building is None else (self.current, self.building)


@dataclass(frozen=True, slots=True)
class Change:
    """How an index differs from the settings."""

    rebuild: list[str] = field(default_factory=list)  # why it needs a rebuild ([]: it does not)
    added: dict[str, str] = field(default_factory=dict)  # metadata fields FT.ALTER adds
    backfill: list[str] = field(default_factory=list)  # tables whose rows need those columns
    rewrite: bool = False  # the recorded metadata changes (columns added or removed)


# ----------------------------------------------------------------- what the settings want


def built_from_settings(settings: Settings, model: Model) -> dict[str, Built]:
    """What each index of the settings is to be built with, by index name."""
    specs = index_specs(settings.tables)  # refuses tables that disagree on an index
    built = {}
    for name, spec in specs.items():
        tables = tuple(t for t in settings.tables if t.index_name == name)
        built[name] = Built(model.provider, model.model, model.dimensions, tables, spec.fields)
    return built


def compare(built: Built, want: Built) -> Change:
    """What changing `built` into `want` takes (pure)."""
    reasons = []
    if built.model_id != want.model_id:
        reasons.append(f"model {built.describe_model()} -> {want.describe_model()}")
    if describe_vector(built.vector) != describe_vector(want.vector):
        reasons.append(
            f"vector {describe_vector(built.vector)!r} -> {describe_vector(want.vector)!r}"
        )
    before = {t.qualified_name: t for t in built.tables}
    after = {t.qualified_name: t for t in want.tables}
    if after.keys() - before.keys():
        reasons.append(f"tables added: {', '.join(sorted(after.keys() - before.keys()))}")
    if before.keys() - after.keys():
        reasons.append(f"tables removed: {', '.join(sorted(before.keys() - after.keys()))}")
    added: dict[str, str] = {}
    backfill: list[str] = []
    rewrite = False
    for name in sorted(after.keys() & before.keys()):
        old, new = before[name], after[name]
        reasons += _table_differences(old, new)
        for column, kind in new.metadata.items():
            if built.fields.get(column, kind) != kind:
                reasons.append(f"metadata field {column}: {built.fields[column]} -> {kind}")
            elif column not in old.metadata:
                if column not in built.fields:
                    added[column] = kind
                backfill.append(name)
        rewrite = rewrite or old.metadata != new.metadata
    return Change(reasons, added, sorted(set(backfill)), rewrite)


def _table_differences(old: TableSettings, new: TableSettings) -> list[str]:
    skip = {"metadata", "vector"}
    before, after = old.model_dump(exclude=skip), new.model_dump(exclude=skip)
    return [
        f"table {new.qualified_name}: {name} {before[name]!r} -> {after[name]!r}"
        for name in after
        if before.get(name) != after[name]
    ]


# ----------------------------------------------------------------- reading


def read_record(client: redis.Redis, alias: str) -> Record | None:
    raw = {text(k): text(v) for k, v in client.hgetall(alias_key(alias)).items()}
    if "current" not in raw:
        return None

    def physical(name: str) -> Physical | None:
        return Physical(raw[name], raw[f"{name}_prefix"]) if raw.get(name) else None

    current = physical("current")
    assert current is not None
    return Record(
        alias,
        current,
        generation=int(raw.get("generation", 0)),
        serial=int(raw.get("serial", 1)),
        building=physical("building"),
        phase=raw.get("phase", ""),
        at=Lsn.parse(raw["at"]) if raw.get("at") else None,
        rows_done=int(raw.get("rows_done", 0)),
        rows_total=int(raw.get("rows_total", 0)),
        started=float(raw.get("started", 0)),
        reason=raw.get("reason", ""),
        retiring=physical("retiring"),
        retired_at=float(raw.get("retired_at", 0)),
        backfill=tuple(t for t in raw.get("backfill", "").split(",") if t),
    )


def read_built(
    client: redis.Redis, physical: Physical, configured: Sequence[TableSettings] = ()
) -> Built | None:
    """What `physical` was built with (None: no meta). An index of a connector that did not
    record its tables is taken to hold `configured`, with the metadata its schema has."""
    meta = {text(k): text(v) for k, v in client.hgetall(f"{physical.prefix}:meta").items()}
    if not meta.get("model"):
        return None
    if "tables" in meta:
        tables = tuple(TableSettings.model_validate(t) for t in json.loads(meta["tables"]))
        fields = dict(json.loads(meta.get("fields", "{}")))
    elif not configured:
        return None
    else:
        fields = schema_fields(client, physical.name)
        vector = _recorded_vector(meta)
        tables = tuple(
            t.model_copy(
                update={
                    "vector": vector,
                    "metadata": {c: k for c, k in t.metadata.items() if fields.get(c) == k},
                }
            )
            for t in configured
        )
    return Built(meta["provider"], meta["model"], int(meta["dimensions"]), tables, fields)


def _recorded_vector(meta: Mapping[str, str]) -> VectorSettings:
    """The vector options a meta of an earlier connector records (`describe_vector`'s text)."""
    words = meta.get("vector", describe_vector(VectorSettings())).split()
    options: dict[str, Any] = {"algorithm": words[0], "type": words[1], "distance": words[2]}
    for word in words[3:]:
        name, _, value = word.partition("=")
        options[name] = float(value) if name == "epsilon" else int(value)
    return VectorSettings.model_validate(options)


def schema_fields(client: redis.Redis, index: str) -> dict[str, str]:
    """The metadata fields of an index's schema (FT.INFO), by name."""
    info = command(client, "FT.INFO", index)
    fields = {}
    for attribute in info.get(b"attributes", []):
        entry = _pairs(attribute)
        name, kind = text(entry.get("identifier")), text(entry.get("type"))
        if name not in RESERVED_FIELDS and name != "embedding" and kind in _FIELD_KINDS:
            fields[name] = _FIELD_KINDS[kind]
    return fields


def _pairs(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return {text(k): v for k, v in value.items()}
    return {text(value[i]): value[i + 1] for i in range(0, len(value) - 1, 2)}


def _index_info(client: redis.Redis, name: str) -> dict[bytes, Any] | None:
    try:
        info = command(client, "FT.INFO", name)
    except redis.ResponseError:
        return None
    return info if isinstance(info, dict) else None


def current_keys(client: redis.Redis, alias: str) -> Keyspace:
    """The keys of the index the alias points at (those under the name itself before the
    connector first ran)."""
    record = read_record(client, alias)
    return Keyspace(record.current.prefix if record is not None else alias)


def current_specs(client: redis.Redis, settings: Settings) -> dict[str, IndexSpec]:
    """Each configured index's spec as its current physical index has it (the settings' spec
    under the name itself before the connector first ran)."""
    specs = index_specs(settings.tables)
    for name, spec in specs.items():
        record = read_record(client, name)
        if record is None:
            continue
        built = read_built(
            client, record.current, tuple(t for t in settings.tables if t.index_name == name)
        )
        specs[name] = (
            built.spec(name, record.current)
            if built
            else replace(spec, physical=record.current.name, prefix=record.current.prefix)
        )
    return specs


# ----------------------------------------------------------------- creating and adopting


def open_alias(
    client: redis.Redis, alias: str, want: Built, owner: Owner | None = None
) -> tuple[Record, bool]:
    """The alias's record, making the alias and its first physical index if there are none:
    an index an earlier connector built under the name itself is adopted. True when an index of
    an older schema was dropped (its tables must be copied again). With `owner`, an index
    another slot writes is refused before anything is changed, and `owner` is recorded."""
    check_server_supports(client, want.spec(alias, Physical(alias, alias)))
    record = read_record(client, alias)
    if record is None:
        _refuse_claimed(client, alias)
        _refuse_foreign(client, alias)
    elif owner is not None:
        check_owner(client, record, owner.slot)
    record, dropped = _open(client, alias, want, record)
    if owner is not None:
        claim(client, record, owner)
    return record, dropped


def _open(
    client: redis.Redis, alias: str, want: Built, record: Record | None
) -> tuple[Record, bool]:
    carry_dead_letters(client, alias, record)  # before anything drops a prefix's keys
    dropped = _drop_older_schema(client, alias, record)
    if record is not None and not dropped:
        if _index_info(client, record.current.name) is None:  # dropped by hand: make it again
            create_physical(client, record.current, read_built(client, record.current) or want)
            _set_alias(client, alias, record.current)
        return record, False
    info = _index_info(client, alias)
    if info is not None and text(info.get(b"index_name")) != alias:  # an alias with no record
        return _recover(client, alias, info), dropped
    first = Physical(physical_name(client, alias, 1), alias)
    if info is not None:
        _adopt(
            client, alias, first, read_built(client, Physical(alias, alias), want.tables) or want
        )
    else:
        create_physical(client, first, want)
        _set_alias(client, alias, first)
    client.hset(alias_key(alias), mapping={"current": first.name, "current_prefix": first.prefix,
                                           "serial": "1"})  # fmt: skip
    return Record(alias, first), dropped


def carry_dead_letters(client: redis.Redis, alias: str, record: Record | None) -> None:
    """Move the dead letters an earlier connector kept under a physical prefix
    (`<prefix>:deadletter`, dropped with that prefix by a rebuild) into the index name's stream,
    in order (with their ids when the stream holds none newer)."""
    prefixes = {alias}
    if record is not None:
        found = (record.current, record.building, record.retiring)
        prefixes |= {physical.prefix for physical in found if physical is not None}
    stream = deadletter_key(alias)
    for prefix in sorted(prefixes):
        old = f"{prefix}:deadletter"
        if text(client.type(old)) != "stream":
            continue
        last = _entries(client.xrevrange(stream, count=1))
        first = _entries(client.xrange(old, count=1))
        keep = not last or bool(first and _stream_id(first[0][0]) > _stream_id(last[0][0]))
        moved = 0
        while entries := _entries(client.xrange(old, count=500)):
            # Each step adds and removes together: a crash in between moves nothing twice.
            pipe = client.pipeline(transaction=not isinstance(client, redis.RedisCluster))
            for entry_id, fields in entries:
                pipe.xadd(stream, fields, id=entry_id if keep else "*")  # type: ignore[arg-type]
                pipe.xdel(old, entry_id)
            pipe.execute()
            moved += len(entries)
        client.delete(old)
        log.info("index %s: moved %d dead letters from %s to %s (kept across rebuilds)",
                 alias, moved, old, stream)  # fmt: skip


def _entries(reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return list(reply or [])


def _stream_id(entry_id: bytes | str) -> tuple[int, int]:
    millis, _, seq = text(entry_id).partition("-")
    return int(millis), int(seq or 0)


def physical_name(client: redis.Redis, alias: str, serial: int) -> str:
    """`<alias>.v<serial>`; on a Redis Cluster `{<alias>}.v<serial>`, in the alias's hash slot
    (RediSearch keeps an index and its aliases on one node). No index name holds a `.`."""
    if isinstance(client, redis.RedisCluster):
        return f"{{{alias}}}.v{serial}"
    return f"{alias}.v{serial}"


def physical_prefix(alias: str, serial: int) -> str:
    """The key prefix of a rebuilt index, `<alias>.v<serial>` (the first keeps the name)."""
    return f"{alias}.v{serial}"


# `<alias>.v<N>`, `{<alias>}.v<N>`, and `<alias>_v<N>` of connectors before names and owners.
_SERIAL = re.compile(r"[._]v(\d+)$")


def _atomically(client: redis.Redis, *commands: list[Any]) -> None:
    """Run `commands` in one MULTI, so a search sees all of them or none. A Redis Cluster runs
    them in order instead (the alias's record is in another hash slot): a search there notices
    a switch by the prefix of its hits."""
    if isinstance(client, redis.RedisCluster):
        for args in commands:
            command(client, *args)
        return
    pipe = client.pipeline(transaction=True)
    for args in commands:
        command(pipe, *args)
    pipe.execute()


def create_physical(client: redis.Redis, physical: Physical, built: Built) -> None:
    """Create a physical index (its keys under its prefix) and record what it is built with."""
    spec = built.spec(physical.name, physical)
    command(client, *schema_args(spec, built.dimensions))
    client.hset(f"{physical.prefix}:meta", mapping=built.meta())
    log.info("created index %s (keys under %s:, %s, %s)", physical.name, physical.prefix,
             built.describe_model(), describe_vector(built.vector))  # fmt: skip


def _set_alias(client: redis.Redis, alias: str, physical: Physical) -> None:
    command(client, "FT.ALIASUPDATE", alias, physical.name)  # adds it when there is none


def _adopt(client: redis.Redis, alias: str, first: Physical, built: Built) -> None:
    """An index built under the name itself becomes `<name>_v1` over the same keys."""
    log.warning(
        "index %s was built by an earlier connector under its own name: adopting it as %s "
        "behind the alias %s (Redis indexes its chunks again; nothing is embedded or copied, "
        "and searches keep using it until that is done)", alias, first.name, alias,
    )  # fmt: skip
    if _index_info(client, first.name) is None:
        create_physical(client, first, built)
    client.hset(f"{first.prefix}:meta", mapping=built.meta())
    deadline = time.monotonic() + _ADOPT_TIMEOUT_S
    last_log = time.monotonic()
    while True:
        info = _index_info(client, first.name) or {}
        done = float(info.get(b"percent_indexed", 1) or 0)
        if done >= 1.0:
            break
        if time.monotonic() > deadline:
            raise RedisIndexError(f"adopting index {alias}: Redis did not index it again within "
                                  f"{_ADOPT_TIMEOUT_S:.0f}s; start again to go on")  # fmt: skip
        if time.monotonic() - last_log > 5:
            log.info("adopting index %s: %.0f%% indexed again", alias, 100 * done)
            last_log = time.monotonic()
        time.sleep(0.05)
    _atomically(client, ["FT.DROPINDEX", alias], ["FT.ALIASADD", alias, first.name])
    log.info("index %s now answers from %s", alias, first.name)


def _recover(client: redis.Redis, alias: str, info: Mapping[bytes, Any]) -> Record:
    """An alias whose record was lost: read the physical index and prefix back from Redis."""
    name = text(info.get(b"index_name"))
    definition = _pairs(info.get(b"index_definition", []))
    prefixes = definition.get("prefixes") or [f"{name}:chunk:".encode()]
    prefix = text(prefixes[0]).removesuffix(":chunk:")
    found = _SERIAL.search(name)
    serial = int(found.group(1)) if found else 1
    client.hset(alias_key(alias), mapping={"current": name, "current_prefix": prefix,
                                           "serial": str(serial)})  # fmt: skip
    log.warning("index %s had no record: it answers from %s (keys under %s:)", alias, name, prefix)
    return Record(alias, Physical(name, prefix), serial=serial)


def _drop_older_schema(client: redis.Redis, alias: str, record: Record | None) -> bool:
    """Remove an index built by a connector of an older schema, with every key under its
    prefix. True when it did."""
    prefix = record.current.prefix if record is not None else alias
    version = text(client.hget(f"{prefix}:meta", "schema_version")) or None
    if version is None or version == SCHEMA_VERSION:
        return False
    log.warning(
        "index %s was built by an older connector (schema version %s, this one writes %s): "
        "dropping it and copying its tables again (searches fail until the copy is in)",
        alias, version, SCHEMA_VERSION,
    )  # fmt: skip
    for name in {alias, record.current.name if record else alias}:
        with contextlib.suppress(redis.ResponseError):
            command(client, "FT.DROPINDEX", name)
    drop_all_keys(client, prefix)
    client.delete(alias_key(alias))
    return True


# ----------------------------------------------------------------- names and owners


def _refuse_claimed(client: redis.Redis, alias: str) -> None:
    """Refuse an index name that another index's record uses as a physical index or a key
    prefix (connectors before names and owners named them `<name>_v<N>`): opening it would
    adopt, drop or write that index."""
    for key in client.scan_iter(match=alias_key("*"), count=1000):
        other = text(key).removeprefix(alias_key(""))
        found = read_record(client, other) if other != alias else None
        if found is None:
            continue
        for physical in (found.current, found.building, found.retiring):
            if physical is not None and alias in (physical.name, physical.prefix):
                raise ConfigError(
                    f"index name {alias} is taken: index {other} keeps its physical index "
                    f"{physical.name} (keys under {physical.prefix}:) under it, as connectors "
                    "before this version named rebuilt indexes. Give these tables another index "
                    f"name ([[tables]] index), or rebuild index {other} first (`connector "
                    f"reindex` for its tables: the new one is named {other}.v<N>, and the old one "
                    "is dropped after the switch)"
                )


def _refuse_foreign(client: redis.Redis, alias: str) -> None:
    """Refuse to adopt an index under the name itself that a connector did not provably build:
    one over the keys `<name>:chunk:` with a connector's meta at `<name>:meta`."""
    info = _index_info(client, alias)
    if info is None or text(info.get(b"index_name")) != alias:
        return  # nothing there, or an alias (its record was lost: `_recover`)
    prefixes = [text(p) for p in _pairs(info.get(b"index_definition", [])).get("prefixes", [])]
    if prefixes == [f"{alias}:chunk:"] and client.hexists(f"{alias}:meta", "model"):
        return
    raise ConfigError(
        f"Redis has an index named {alias} that this connector did not build (keys under "
        f"{', '.join(prefixes) or 'no prefix'}, no connector meta at {alias}:meta): it is left "
        f"alone. Give these tables another index name ([[tables]] index), or drop that index "
        f"(FT.DROPINDEX {alias}) if nothing needs it"
    )


_OWNER_SLOT, _OWNER_SYSTEM = "owner_slot", "owner_system_id"


def read_owner(client: redis.Redis, physical: Physical) -> Owner | None:
    """The owner `physical`'s meta records (None: built before owners were recorded)."""
    slot, system_id = client.hmget(f"{physical.prefix}:meta", [_OWNER_SLOT, _OWNER_SYSTEM])
    return Owner(text(slot), text(system_id)) if slot else None


def set_owner(client: redis.Redis, physical: Physical, owner: Owner) -> None:
    """Record `owner` in `physical`'s meta: at a hand-over (`connector slot take-over`), and
    when a rebuild for another history of the same slot (a restore, a failover) is in, to
    record the new database system id."""
    client.hset(f"{physical.prefix}:meta",
                mapping={_OWNER_SLOT: owner.slot, _OWNER_SYSTEM: owner.system_id})  # fmt: skip


def check_owner(client: redis.Redis, record: Record, slot: str) -> None:
    """Refuse an index whose physical indexes another slot writes. The same slot with another
    system id is not another owner: it is another history of the same source (a restore or a
    failover), which the daemon rebuilds for."""
    for physical in record.written:
        found = read_owner(client, physical)
        if found is not None and found.slot != slot:
            raise ConfigError(
                f"index {record.alias} belongs to another connector: its physical index "
                f"{physical.name} is written by {found.describe()}, and this "
                f"connector streams slot {slot}; two connectors on one index would write the "
                "same keys and collect each other's versions as garbage. Give these tables "
                "another index name ([[tables]] index), or hand the index over: stop the "
                f"connector of slot {found.slot}, then run `connector slot take-over --index "
                f"{record.alias}` with this configuration"
            )


def claim(client: redis.Redis, record: Record, owner: Owner) -> None:
    """Make `owner` the owner of the alias's indexes that record none (built before owners
    were recorded), and refuse them if another slot got there first."""
    for physical in record.written:
        meta = f"{physical.prefix}:meta"
        if client.hsetnx(meta, _OWNER_SLOT, owner.slot):  # one of two starting connectors wins
            client.hset(meta, _OWNER_SYSTEM, owner.system_id)
        elif not text(client.hget(meta, _OWNER_SYSTEM)) and owner.system_id:
            found = read_owner(client, physical)
            if found is not None and found.slot == owner.slot:  # claimed where it was not known
                client.hset(meta, _OWNER_SYSTEM, owner.system_id)
    check_owner(client, record, owner.slot)


# ----------------------------------------------------------------- changing


def alter(client: redis.Redis, record: Record, built: Built, want: Built, change: Change) -> Built:
    """Make the metadata changes `change` lists in place: FT.ALTER adds new fields; the tables
    whose rows lack them are recorded for a back-fill (flow.rebuild)."""
    for column, kind in change.added.items():
        command(client, "FT.ALTER", record.current.name, "SCHEMA", "ADD", column, *field_args(kind))
        log.info("index %s: added metadata field %s (%s) in place", record.alias, column, kind)
    tables = {t.qualified_name: t for t in want.tables}
    now = Built(built.provider, built.model, built.dimensions,
                tuple(t.model_copy(update={"metadata": dict(tables[t.qualified_name].metadata)})
                      for t in built.tables),
                {**built.fields, **change.added})  # fmt: skip
    client.hset(f"{record.current.prefix}:meta", mapping=now.meta())
    if change.backfill:
        backfill = sorted({*record.backfill, *change.backfill})
        client.hset(alias_key(record.alias), "backfill", ",".join(backfill))
    client.hincrby(alias_key(record.alias), "generation", 1)
    return now


def begin_rebuild(client: redis.Redis, record: Record, want: Built, reason: str) -> Record:
    """Create the next physical index and record that a rebuild is building it."""
    serial = record.serial + 1
    building = Physical(physical_name(client, record.alias, serial),
                        physical_prefix(record.alias, serial))  # fmt: skip
    drop_all_keys(client, building.prefix)  # leftovers of an abandoned one
    with contextlib.suppress(redis.ResponseError):
        command(client, "FT.DROPINDEX", building.name)
    create_physical(client, building, want)
    owner = read_owner(client, record.current)
    if owner is not None:  # the same connector writes it
        set_owner(client, building, owner)
    client.hset(alias_key(record.alias), mapping={
        "serial": str(serial), "building": building.name, "building_prefix": building.prefix,
        "phase": "copying", "at": "", "rows_done": "0", "rows_total": "0",
        "started": str(time.time()), "reason": reason,
    })  # fmt: skip
    log.warning("index %s: rebuilding it as %s (%s)", record.alias, building.name, reason)
    found = read_record(client, record.alias)
    assert found is not None
    return found


def abandon_building(client: redis.Redis, record: Record) -> None:
    """Drop a rebuild's physical index and keys (settings changed again, or `--cancel`)."""
    if record.building is None:
        return
    with contextlib.suppress(redis.ResponseError):
        command(client, "FT.DROPINDEX", record.building.name)
    drop_all_keys(client, record.building.prefix)
    _end_rebuild(client, record.alias)
    log.warning("index %s: abandoned the rebuild into %s", record.alias, record.building.name)


_REBUILD_FIELDS = ("building", "building_prefix", "phase", "at", "rows_done", "rows_total",
                   "started", "reason")  # fmt: skip


def _end_rebuild(client: redis.Redis, alias: str) -> None:
    client.hdel(alias_key(alias), *_REBUILD_FIELDS)


def record_progress(client: redis.Redis, alias: str, done: int, total: int) -> None:
    client.hset(alias_key(alias), mapping={"rows_done": str(done), "rows_total": str(total)})


def mark_copied(client: redis.Redis, alias: str, at: Lsn) -> None:
    """The rebuild's copy is in, as of `at`: the switch follows once readers are past it."""
    client.hset(alias_key(alias), mapping={"phase": "copied", "at": str(at)})


def end_backfill(client: redis.Redis, alias: str, tables: Iterable[str]) -> None:
    record = read_record(client, alias)
    if record is None:
        return
    left = [t for t in record.backfill if t not in set(tables)]
    client.hset(alias_key(alias), "backfill", ",".join(left))


def switch(client: redis.Redis, record: Record) -> None:
    """Point the alias at the rebuilt index, in one step: a search answers from one index or
    the other. The one before is dropped after the grace period (`retire_step`)."""
    switch_together(client, [record])


def switch_together(client: redis.Redis, records: Sequence[Record], *also: list[Any]) -> None:
    """Switch every alias of `records` to its rebuilt index and run `also`, in one step (a
    rebuild for another history of the source: its checkpoint comes with the switch)."""
    commands: list[list[Any]] = []
    for record in records:
        assert record.building is not None
        old, new = record.current, record.building
        key = alias_key(record.alias)
        moved = {
            "current": new.name, "current_prefix": new.prefix, "retiring": old.name,
            "retiring_prefix": old.prefix, "retired_at": str(time.time()), "backfill": "",
        }  # fmt: skip
        commands += [
            ["FT.ALIASUPDATE", record.alias, new.name],
            ["HSET", key, *[part for pair in moved.items() for part in pair]],
            ["HDEL", key, *_REBUILD_FIELDS],
            ["HINCRBY", key, "generation", 1],
        ]
    _atomically(client, *commands, *also)
    for record in records:
        assert record.building is not None
        log.warning("index %s: switched to %s (from %s)", record.alias, record.building.name,
                    record.current.name)  # fmt: skip


def retire_step(client: redis.Redis, record: Record, grace_s: float, budget: int) -> bool:
    """One bounded step of dropping the index before the last switch (after `grace_s`, so that
    a search that read it just before the switch finds its rows). True while there is more."""
    old = record.retiring
    if old is None or time.time() - record.retired_at < grace_s:
        return old is not None
    with contextlib.suppress(redis.ResponseError):  # first: its keys then go without re-indexing
        command(client, "FT.DROPINDEX", old.name)
    if drop_keys(client, old.prefix, budget):
        return True
    client.hdel(alias_key(record.alias), "retiring", "retiring_prefix", "retired_at")
    log.info("index %s: dropped %s and its keys", record.alias, old.name)
    return False


def drop_all_keys(client: redis.Redis, prefix: str) -> None:
    """Unlink every key under `prefix:`, in bounded steps."""
    while drop_keys(client, prefix, 10_000):
        pass


def drop_keys(client: redis.Redis, prefix: str, budget: int) -> int:
    """Unlink up to `budget` keys under `prefix:`; how many it found."""
    found = 0
    pipe = client.pipeline(transaction=False)  # one key per command: keys of any hash slot
    for key in client.scan_iter(match=f"{prefix}:*", count=min(budget, 1000)):
        pipe.unlink(key)
        found += 1
        if found % 500 == 0:
            pipe.execute()
        if found >= budget:
            break
    pipe.execute()
    return found

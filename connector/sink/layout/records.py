"""The words of an index's life as data (`Physical`, `Owner`, `Record`), the alias's record as
Redis holds it, the names a rebuild gives, and the Redis steps every part of the layout takes:
FT.INFO, one step of several commands, unlinking a prefix's keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from connector.core.keys import Keyspace, alias_key
from connector.core.lsn import Lsn
from connector.sink.redis_client import command, text


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


def current_keys(client: redis.Redis, alias: str) -> Keyspace:
    """The keys of the index the alias points at (those under the name itself before the
    connector first ran)."""
    record = read_record(client, alias)
    return Keyspace(record.current.prefix if record is not None else alias)


def physical_name(client: redis.Redis, alias: str, serial: int) -> str:
    """`<alias>.v<serial>`; on a Redis Cluster `{<alias>}.v<serial>`, in the alias's hash slot
    (RediSearch keeps an index and its aliases on one node). No index name holds a `.`."""
    if isinstance(client, redis.RedisCluster):
        return f"{{{alias}}}.v{serial}"
    return f"{alias}.v{serial}"


def physical_prefix(alias: str, serial: int) -> str:
    """The key prefix of a rebuilt index, `<alias>.v<serial>` (the first keeps the name)."""
    return f"{alias}.v{serial}"


def info_pairs(value: Any) -> dict[str, Any]:
    """An FT.INFO entry (a RESP2 list of pairs or a RESP3 map) as a dict by name."""
    if isinstance(value, dict):
        return {text(k): v for k, v in value.items()}
    return {text(value[i]): value[i + 1] for i in range(0, len(value) - 1, 2)}


def index_info(client: redis.Redis, name: str) -> dict[bytes, Any] | None:
    """FT.INFO of `name` (None: no such index)."""
    try:
        info = command(client, "FT.INFO", name)
    except redis.ResponseError:
        return None
    return info if isinstance(info, dict) else None


def atomically(client: redis.Redis, *commands: list[Any]) -> None:
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

"""Names and owners: an index name no other index's record uses, an index under the name itself
adopted only when a connector provably built it, and the owner each physical index records in
its meta (the slot that writes it, and the database system id)."""

from __future__ import annotations

import redis

from connector.core.keys import alias_key
from connector.errors import ConfigError
from connector.sink.layout.records import (
    Owner,
    Physical,
    Record,
    index_info,
    info_pairs,
    read_record,
)
from connector.sink.redis_client import text


def refuse_claimed(client: redis.Redis, alias: str) -> None:
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


def refuse_foreign(client: redis.Redis, alias: str) -> None:
    """Refuse to adopt an index under the name itself that a connector did not provably build:
    one over the keys `<name>:chunk:` with a connector's meta at `<name>:meta`."""
    info = index_info(client, alias)
    if info is None or text(info.get(b"index_name")) != alias:
        return  # nothing there, or an alias (its record was lost: `_recover`)
    prefixes = [text(p) for p in info_pairs(info.get(b"index_definition", [])).get("prefixes", [])]
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

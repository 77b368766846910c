"""Opening an index name: its alias and first physical index made when there are none, an
index an earlier connector built under the name itself adopted, a lost record recovered, an
index of an older schema dropped, and dead letters kept under a physical prefix carried to the
index name's stream."""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

import redis

from connector.core.keys import alias_key, deadletter_key
from connector.errors import RedisIndexError
from connector.sink.layout.built import Built, create_physical, read_built
from connector.sink.layout.owners import check_owner, claim, refuse_claimed, refuse_foreign
from connector.sink.layout.records import (
    Owner,
    Physical,
    Record,
    atomically,
    drop_all_keys,
    index_info,
    info_pairs,
    physical_name,
    read_record,
)
from connector.sink.redis_client import command, text
from connector.sink.schema import SCHEMA_VERSION, check_server_supports

log = logging.getLogger(__name__)

# How long the adoption of an earlier connector's index may take Redis to index it again.
_ADOPT_TIMEOUT_S = 3600.0
# `<alias>.v<N>`, `{<alias>}.v<N>`, and `<alias>_v<N>` of connectors before names and owners.
_SERIAL = re.compile(r"[._]v(\d+)$")


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
        refuse_claimed(client, alias)
        refuse_foreign(client, alias)
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
        if index_info(client, record.current.name) is None:  # dropped by hand: make it again
            create_physical(client, record.current, read_built(client, record.current) or want)
            _set_alias(client, alias, record.current)
        return record, False
    info = index_info(client, alias)
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


def _set_alias(client: redis.Redis, alias: str, physical: Physical) -> None:
    command(client, "FT.ALIASUPDATE", alias, physical.name)  # adds it when there is none


def _adopt(client: redis.Redis, alias: str, first: Physical, built: Built) -> None:
    """An index built under the name itself becomes `<name>_v1` over the same keys."""
    log.warning(
        "index %s was built by an earlier connector under its own name: adopting it as %s "
        "behind the alias %s (Redis indexes its chunks again; nothing is embedded or copied, "
        "and searches keep using it until that is done)", alias, first.name, alias,
    )  # fmt: skip
    if index_info(client, first.name) is None:
        create_physical(client, first, built)
    client.hset(f"{first.prefix}:meta", mapping=built.meta())
    deadline = time.monotonic() + _ADOPT_TIMEOUT_S
    last_log = time.monotonic()
    while True:
        info = index_info(client, first.name) or {}
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
    atomically(client, ["FT.DROPINDEX", alias], ["FT.ALIASADD", alias, first.name])
    log.info("index %s now answers from %s", alias, first.name)


def _recover(client: redis.Redis, alias: str, info: Mapping[bytes, Any]) -> Record:
    """An alias whose record was lost: read the physical index and prefix back from Redis."""
    name = text(info.get(b"index_name"))
    definition = info_pairs(info.get(b"index_definition", []))
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

"""A rebuild's steps in the alias's record: metadata changed in place (`alter`), the next
physical index begun, its progress, the switch of the alias in one step, and the index before
it dropped in bounded steps after the grace period."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import redis

from connector.core.keys import alias_key
from connector.core.lsn import Lsn
from connector.sink.layout.built import Built, Change, create_physical
from connector.sink.layout.owners import read_owner, set_owner
from connector.sink.layout.records import (
    Physical,
    Record,
    atomically,
    drop_all_keys,
    drop_keys,
    physical_name,
    physical_prefix,
    read_record,
)
from connector.sink.redis_client import command
from connector.sink.schema import field_args

log = logging.getLogger(__name__)


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
    atomically(client, *commands, *also)
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

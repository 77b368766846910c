"""What a reader sees: the index as of one visible LSN.

A reader reads the checkpoint's visible LSN V and the truncate floors of the tables it reads,
then counts a chunk only if it belongs to its row's version that is current at V (see
core.versions). Used by search (query.visibility), `verify`, and `status`; the planner reads
the indexes it plans for through `RedisReads` (core.plan.IndexReads).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.client import Pipeline

from connector.core.keys import Keyspace, staged_key
from connector.core.lsn import Lsn
from connector.core.versions import LEAF_FIELD, Manifest, Version, floor_at, parse_floors
from connector.sink.checkpoint import parse_visible, queue_visible
from connector.sink.redis_client import read_fields, text


@dataclass(frozen=True, slots=True)
class View:
    visible: Lsn
    floors: dict[str, Lsn]  # table -> the truncate floor honoured at `visible` (if any)
    pending: bool = True  # staging may have versions above `visible` in the index

    def current(self, table: str, manifest: Manifest) -> Version | None:
        return manifest.current(self.visible, self.floors.get(table))


def read_view(client: redis.Redis, slot: str, keys: Keyspace, tables: Iterable[str]) -> View:
    """The visible LSN, whether anything is staged above it, and the floors of `tables`, in
    one round trip."""
    names = list(tables)
    pipe = client.pipeline(transaction=False)
    queue_view(pipe, slot, keys, names)
    return parse_view(pipe.execute(), names)


def queue_view(pipe: Pipeline, slot: str, keys: Keyspace, tables: Sequence[str]) -> int:
    """Queue the reads of a view on `pipe` (a reader may queue its query after them: Redis
    runs them in order, so the query sees the index as of the view); returns how many."""
    queue_visible(pipe, slot)
    pipe.get(staged_key(slot))
    for table in tables:
        pipe.hgetall(keys.floor(table))
    return 2 + len(tables)


def parse_view(replies: Sequence[Any], tables: Sequence[str]) -> View:
    """The view from the replies of `queue_view`'s reads."""
    raw, staged, *floors = replies
    visible = parse_visible(raw)
    pending = staged is None or int(staged) > visible.value
    honoured = {}
    for table, fields in zip(tables, floors, strict=True):
        floor = floor_at(parse_floors(fields), visible)
        if floor is not None:
            honoured[table] = floor
    return View(visible, honoured, pending)


def scan_manifests(
    client: redis.Redis, keys: Keyspace, table: str | None = None
) -> Iterator[tuple[str, Manifest]]:
    """Every row manifest under the index prefix (of `table`, or of every table): (manifest
    key, manifest), in batches."""
    batch: list[bytes] = []
    for key in client.scan_iter(match=keys.row_pattern(table), count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            yield from _manifests_of(client, batch)
            batch = []
    yield from _manifests_of(client, batch)


def _manifests_of(client: redis.Redis, names: list[bytes]) -> Iterator[tuple[str, Manifest]]:
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(name)
    for name, raw in zip(names, pipe.execute() if names else [], strict=True):
        yield name.decode(), Manifest.parse(raw)


def read_manifests(
    client: redis.Redis, keys: Mapping[str, Keyspace], rows: Sequence[tuple[str, str]]
) -> list[Manifest]:
    """The manifests of rows (table, encoded key; `keys` by table), in one round trip."""
    pipe = client.pipeline(transaction=False)
    for table, key in rows:
        pipe.hgetall(keys[table].row(table, key))
    return [Manifest.parse(raw) for raw in pipe.execute()]


class RedisReads:
    """What the planner reads of the indexes whose tables `keys` maps (table -> keyspace):
    manifests, floors and stored chunk fields in one round trip each (core.plan.IndexReads)."""

    def __init__(self, client: redis.Redis, keys: Mapping[str, Keyspace]) -> None:
        self.client = client
        self.keys = dict(keys)

    def manifests(self, rows: Sequence[tuple[str, str]]) -> list[Manifest]:
        """The manifest of each row (table, encoded key), in order."""
        return read_manifests(self.client, self.keys, rows)

    def manifests_and_floors(
        self, rows: Sequence[tuple[str, str]]
    ) -> tuple[list[Manifest], dict[str, list[Lsn]]]:
        """The manifest of each row (table, encoded key), in order, and the truncate floors of
        their tables, in one round trip."""
        names = sorted({table for table, _key in rows})
        pipe = self.client.pipeline(transaction=False)
        for table, key in rows:
            pipe.hgetall(self.keys[table].row(table, key))
        for table in names:
            pipe.hgetall(self.keys[table].floor(table))
        replies = pipe.execute() if rows else []
        manifests = [Manifest.parse(raw) for raw in replies[: len(rows)]]
        floors = replies[len(rows) :]
        return manifests, {t: parse_floors(raw) for t, raw in zip(names, floors, strict=True)}

    def chunk_fields(
        self, chunks: Sequence[tuple[str, str, str]], *fields: str
    ) -> list[list[bytes | None]]:
        """Fields of chunk hashes (table, row key, chunk id); None where a chunk is gone."""
        keys = [self.keys[t].chunk(t, k, c) for t, k, c in chunks]
        return [values for _key, values in read_fields(self.client, keys, *fields)]

    def rows_in_leaf(self, table: str, leaf: str) -> list[str]:
        """The encoded keys of `table`'s rows whose manifest says they are in partition `leaf`
        (a scan of the table's manifests, in bounded steps: a TRUNCATE of one partition)."""
        keys = self.keys[table]
        found: list[str] = []
        names: list[bytes] = []

        def check() -> None:
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                pipe.hget(name, LEAF_FIELD)
            for name, value in zip(names, pipe.execute(), strict=True):
                if value is not None and text(value) == leaf:
                    found.append(keys.key_from_row(text(name), table))
            names.clear()

        for name in self.client.scan_iter(match=keys.row_pattern(table), count=1000):
            names.append(name)
            if len(names) >= 500:
                check()
        check()
        return found

"""What a reader sees: the index as of one visible LSN.

A reader reads the checkpoint's visible LSN V and the truncate floors of the tables it reads,
then counts a chunk only if it belongs to its row's version that is current at V (see
core.versions). Used by search (query.visibility), `verify`, and `status`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.client import Pipeline

from connector.core.keys import Keyspace, checkpoint_key, staged_key
from connector.core.lsn import Lsn
from connector.core.versions import Manifest, Version, floor_at, parse_floors


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
    pipe.hget(checkpoint_key(slot), "visible")
    pipe.get(staged_key(slot))
    for table in tables:
        pipe.hgetall(keys.floor(table))
    return 2 + len(tables)


def parse_view(replies: Sequence[Any], tables: Sequence[str]) -> View:
    """The view from the replies of `queue_view`'s reads."""
    raw, staged, *floors = replies
    visible = Lsn.parse(raw.decode()) if raw else Lsn(0)
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

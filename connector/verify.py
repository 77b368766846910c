"""Compare a table with its index: every row, every chunk's text, every metadata field, no orphans.

The expected index entries are computed from the table exactly as the connector computes them
(same chunker, same metadata conversion), so a clean result means a search sees the table.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import psycopg
import redis

from connector.catalog import TableInfo
from connector.chunking import Chunker
from connector.index import text_hash
from connector.keys import Keyspace
from connector.lsn import ZERO
from connector.pgtypes import metadata_field
from connector.redis_client import scan_fields, text
from connector.rows import RowState, row_key
from connector.snapshot import copy_table

_EXAMPLES = 5


@dataclass(slots=True)
class Drift:
    """What differs between a table and its index."""

    table: str
    rows: int = 0
    chunks: int = 0
    missing: list[str] = field(default_factory=list)  # rows the index lacks
    stale: list[str] = field(default_factory=list)  # rows whose chunks/metadata differ
    orphaned: list[str] = field(default_factory=list)  # index entries with no row

    @property
    def clean(self) -> bool:
        return not (self.missing or self.stale or self.orphaned)

    def summary(self) -> str:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:_EXAMPLES]) + (" ..." if len(keys) > _EXAMPLES else "")

        lines = [
            f"{self.table}: {self.rows} rows, {self.chunks} chunks checked; "
            f"missing {len(self.missing)}, stale {len(self.stale)}, orphaned {len(self.orphaned)}"
        ]
        for name, keys in (
            ("missing", self.missing),
            ("stale", self.stale),
            ("orphaned", self.orphaned),
        ):
            if keys:
                lines.append(f"  {name}: {show(keys)}")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class _Expected:
    hashes: list[str]
    metadata: dict[str, str]


def _expected_rows(
    conn: psycopg.Connection[tuple[object, ...]], table: TableInfo, chunker: Chunker
) -> Iterator[tuple[str, _Expected]]:
    for rows in copy_table(conn, table):
        for change in rows:
            state = RowState(
                table, row_key(table, change.new), change.lsn or ZERO, False, dict(change.new)
            )
            hashes = [text_hash(chunk) for chunk in chunker.chunk(state.text())]
            metadata = {}
            for column, kind in table.settings.metadata.items():
                value = metadata_field(change.new[column], kind)
                if value is not None:
                    metadata[column] = _field_text(value)
            yield state.key, _Expected(hashes, metadata)


def _field_text(value: str | float) -> str:
    """How redis-py writes a field value (so it compares equal to what is read back)."""
    if isinstance(value, float):
        return repr(value)
    return value


def compare_table(
    conn: psycopg.Connection[tuple[object, ...]],
    client: redis.Redis,
    table: TableInfo,
    chunker: Chunker,
) -> Drift:
    """Read the whole table (in the connection's current snapshot) and its index entries."""
    keys = Keyspace(table.settings.index_name)
    drift = Drift(table.name)
    expected = dict(_expected_rows(conn, table, chunker))
    drift.rows = len(expected)
    indexed = _indexed_rows(client, keys, table.name)
    chunk_keys = {
        k.decode() for k in client.scan_iter(match=f"{keys.chunk_prefix}{table.name}:*", count=1000)
    }
    for key, want in expected.items():
        have = indexed.get(key)
        if have is None:
            drift.missing.append(key)
        elif have != want.hashes:
            drift.stale.append(key)
    for key in indexed.keys() - expected.keys():
        drift.orphaned.append(key)
    wanted_chunks = {
        keys.chunk(table.name, key, n): (want.hashes[n], want.metadata)
        for key, want in expected.items()
        for n in range(len(want.hashes))
    }
    drift.chunks = len(wanted_chunks)
    stale = {*drift.stale, *drift.missing}
    for chunk_key in chunk_keys - wanted_chunks.keys():
        drift.orphaned.append(chunk_key)
    _check_chunks(client, keys, table, wanted_chunks, chunk_keys, drift, stale)
    return drift


def _indexed_rows(client: redis.Redis, keys: Keyspace, table: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for row, (hashes,) in scan_fields(client, keys.row_pattern(table), "hashes"):
        joined = text(hashes)
        found[keys.key_from_row(text(row), table)] = joined.split(",") if joined else []
    return found


def _check_chunks(
    client: redis.Redis,
    keys: Keyspace,
    table: TableInfo,
    wanted: dict[str, tuple[str, dict[str, str]]],
    present: set[str],
    drift: Drift,
    stale: set[str],
) -> None:
    """Each expected chunk exists, its text hashes as expected, its metadata is current."""
    fields = ["content", *table.settings.metadata]
    names = list(wanted)
    for start in range(0, len(names), 1000):
        part = names[start : start + 1000]
        pipe = client.pipeline(transaction=False)
        for name in part:
            pipe.hmget(name, fields)
        for name, values in zip(part, pipe.execute(), strict=True):
            digest, metadata = wanted[name]
            row = name[len(f"{keys.chunk_prefix}{table.name}:") :].rsplit(":", 1)[0]
            if row in stale:
                continue
            content = text(values[0]) if values[0] is not None else None
            got = {f: text(v) for f, v in zip(fields[1:], values[1:], strict=True) if v}
            if (
                name not in present
                or content is None
                or text_hash(content) != digest
                or got != metadata
            ):
                drift.stale.append(row)
                stale.add(row)

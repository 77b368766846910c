"""`connector verify [--repair]`: compare a table with its index: every row, every chunk's text,
every metadata field, no orphans; and repair drift by a resync of the drifted tables.

The expected index entries are computed from the table exactly as the connector computes them
(same chunker, same metadata conversion), so a clean result means a search sees the table.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import psycopg
import redis

from connector.config import Settings
from connector.core.chunking import TRUNCATED_FIELD, Chunker, text_hash
from connector.core.fulltext import ORIGINAL_FIELD, content_fields, readable
from connector.core.keys import Keyspace
from connector.core.lsn import ZERO
from connector.core.pgtypes import metadata_field
from connector.core.rows import RowState, row_key
from connector.core.tables import TableInfo
from connector.core.versions import Manifest, id_text_hash
from connector.embed.base import Embedder
from connector.embed.tokenizer import get_encoding
from connector.ops.resync import resync, select_tables
from connector.sink.checkpoint import read_checkpoint
from connector.sink.layout import current_keys, current_specs
from connector.sink.redis_client import client_for, read_fields, text
from connector.sink.view import read_view, scan_manifests
from connector.source.catalog import inspect_table
from connector.source.connection import conninfo, open_snapshot
from connector.source.snapshot import copy_table

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
    garbage: int = 0  # chunk hashes no version lists (invisible; garbage collection removes them)

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
            text, cut = state.limited_text(chunker)
            if cut and table.settings.over_max_content == "deadletter":
                continue  # dead-lettered, never indexed
            hashes = [text_hash(chunk) for chunk in chunker.chunk(text)]
            metadata = {}
            for column, kind in table.settings.metadata.items():
                value = metadata_field(change.new[column], kind)
                if value is not None:
                    metadata[column] = _field_text(value)
            if cut:
                metadata[TRUNCATED_FIELD] = str(table.settings.max_content_tokens)
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
    slot: str,
) -> Drift:
    """Read the whole table (in the connection's current snapshot) and the index as a reader
    sees it now (the row versions current at the visible LSN)."""
    keys = current_keys(client, table.settings.index_name)
    view = read_view(client, slot, keys, [table.name])
    drift = Drift(table.name)
    # The table's own content limit, as the daemon applies it (whoever made the chunker).
    chunker = replace(chunker, max_tokens=table.settings.max_content_tokens)
    expected = dict(_expected_rows(conn, table, chunker))
    drift.rows = len(expected)
    manifests = _manifests(client, keys, table.name)
    current = {key: view.current(table.name, m) for key, m in manifests.items()}
    indexed = {key: v for key, v in current.items() if v is not None}
    for key, want in expected.items():
        have = indexed.get(key)
        if have is None:
            drift.missing.append(key)
        elif [id_text_hash(c) for c in have.chunks] != want.hashes:
            drift.stale.append(key)
    for key in indexed.keys() - expected.keys():
        drift.orphaned.append(key)
    wanted_chunks = {
        keys.chunk(table.name, key, chunk): (id_text_hash(chunk), expected[key].metadata)
        for key, version in indexed.items()
        if key in expected and key not in drift.stale
        for chunk in version.chunks
    }
    drift.chunks = len(wanted_chunks)
    listed = {
        keys.chunk(table.name, key, chunk)
        for key, manifest in manifests.items()
        for version in manifest.versions
        for chunk in version.chunks
    }
    present = {
        k.decode() for k in client.scan_iter(match=keys.chunk_pattern(table.name), count=1000)
    }
    drift.garbage = len(present - listed)
    _check_chunks(client, keys, table, wanted_chunks, present, drift)
    return drift


def _manifests(client: redis.Redis, keys: Keyspace, table: str) -> dict[str, Manifest]:
    return {
        keys.key_from_row(name, table): manifest
        for name, manifest in scan_manifests(client, keys, table)
    }


def _check_chunks(
    client: redis.Redis,
    keys: Keyspace,
    table: TableInfo,
    wanted: dict[str, tuple[str, dict[str, str]]],
    present: set[str],
    drift: Drift,
) -> None:
    """Each expected chunk exists, its text hashes as expected and is indexed as `fulltext`
    has it, its metadata is current; a row with a chunk that is not is stale."""
    stale = set(drift.stale)
    fields = ["content", ORIGINAL_FIELD, *table.settings.metadata, TRUNCATED_FIELD]
    for name, values in read_fields(client, list(wanted), *fields):
        digest, metadata = wanted[name]
        row = keys.row_of_chunk(name, table.name)
        if row in stale:
            continue
        stored = {f: text(v) for f, v in zip(fields[:2], values[:2], strict=True) if v is not None}
        content = stored.get("content", "")
        written = readable(content, stored.get(ORIGINAL_FIELD))
        got = {f: text(v) for f, v in zip(fields[2:], values[2:], strict=True) if v}
        if (
            name not in present
            or "content" not in stored
            or text_hash(written) != digest
            or stored != content_fields(written)
            or got != metadata
        ):
            drift.stale.append(row)
            stale.add(row)


def verify(settings: Settings, only: list[str] | None = None) -> list[Drift]:
    """Compare each chosen table with its index (in one snapshot of the database)."""
    chosen = select_tables(settings, only)
    encoding = get_encoding(settings.embedding.model)
    drifts = []
    with (
        client_for(settings.redis) as client,
        open_snapshot(conninfo(settings.postgres), None) as conn,
    ):
        for table in settings.tables:
            if table.qualified_name not in chosen:
                continue
            info = inspect_table(conn, table)
            chunker = Chunker(encoding, table.chunk_tokens, table.chunk_overlap)
            drifts.append(compare_table(conn, client, info, chunker, settings.postgres.slot))
        conn.rollback()
    return drifts


def checkpoint_problem(settings: Settings) -> str | None:
    """Why the index has no checkpoint it should have (eviction, FLUSHALL), or None."""
    client = client_for(settings.redis)
    try:
        if read_checkpoint(client, settings.postgres.slot) is not None:
            return None
        rows = any(
            next(client.scan_iter(match=spec.keys.row_pattern(), count=1000), None)
            for spec in current_specs(client, settings).values()
        )
    finally:
        client.close()
    if not rows:
        return None  # nothing built yet: the first `connector run` builds it
    return (
        f"Redis holds no checkpoint for slot {settings.postgres.slot} though the index has rows: "
        "it was lost (eviction, FLUSHALL, restart without persistence). `connector run` "
        "resynchronises the tables from a snapshot and writes it again"
    )


def repair(settings: Settings, embedder: Embedder, drifts: list[Drift]) -> None:
    """Fix drift: rebuild the drifted tables from a snapshot (rows whose text is unchanged keep
    their vectors; rows the table no longer has fall below the table's new floor)."""
    tables = [d.table for d in drifts if not d.clean]
    if tables:
        resync(settings, embedder, tables)

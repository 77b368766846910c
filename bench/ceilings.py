"""The ceilings: the same work done by the plainest tools, measured in the same run.

- `Recvlogical`: `pg_recvlogical` reading the same changes from its own wal2json slot, with the
  options the connector uses, into a file: how fast Postgres can decode and ship them.
- `redis_write`: one redis-py client pipelining HSETs of the same chunks (same vectors, same
  fields) into an index with the connector's schema: how fast Redis can store and index them.
- `copy_out`: `COPY documents TO STDOUT`: how fast the table can be read (snapshot).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from bench.data import Row
from bench.env import cleanup_client, num_docs
from connector.config import Settings
from connector.core.lsn import Lsn
from connector.embed import HashingEmbedder
from connector.sink.schema import IndexSpec, index_specs, schema_args
from connector.source.replication import wal2json_options
from connector.testing.services import postgres_bindir


@dataclass
class Recvlogical:
    """A second wal2json slot, created before the load, read after it with pg_recvlogical."""

    dsn: str
    slot: str

    def create(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'wal2json')", [self.slot])

    def read(self, endpos: Lsn, out: Path, tables: list[str]) -> tuple[float, int]:
        """Read everything up to `endpos` into `out`; (seconds, row changes read)."""
        args = [
            str(postgres_bindir() / "pg_recvlogical"),
            "--dbname",
            self.dsn,
            "--slot",
            self.slot,
            "--start",
            "--no-loop",
            "--endpos",
            str(endpos),
            "--fsync-interval",
            "0",
            "--file",
            str(out),
        ]
        for name, value in wal2json_options(tables).items():
            args += ["--option", f"{name}={value}"]
        started = time.perf_counter()
        done = subprocess.run(args, capture_output=True, text=True, timeout=1800, check=False)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"pg_recvlogical failed: {done.stderr.strip()}")
        changes = 0
        with out.open("rb") as fh:
            for line in fh:
                if line.startswith((b'{"action":"I"', b'{"action":"U"', b'{"action":"D"')):
                    changes += 1
        out.unlink()
        return seconds, changes

    def drop(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(%s)", [self.slot])


def ceiling_spec(settings: Settings) -> IndexSpec:
    """The connector's index schema under another name and prefix."""
    spec = next(iter(index_specs(settings.tables).values()))
    return IndexSpec("ceiling", spec.fields, spec.tables)


def prepare_chunks(
    settings: Settings, rows: Sequence[Row], chunks: Sequence[Sequence[str]]
) -> list[dict[str, Any]]:
    """The HASHes the connector writes for these rows (vectors from the same embedder)."""
    embedder = HashingEmbedder(settings.embedding.dimensions)
    table = settings.tables[0].qualified_name
    mappings = []
    for row, texts in zip(rows, chunks, strict=True):
        vectors = embedder.embed(list(texts))
        for n, (text, vector) in enumerate(zip(texts, vectors, strict=True)):
            mappings.append(
                {
                    "content": text,
                    "embedding": vector,
                    "table": table,
                    "pk": str(row.id),
                    "chunk": n,
                    "lsn": "123456789",
                    "source": row.source,
                    "tags": ",".join(row.tags),
                    "updated_at": 1_700_000_000.0 + row.id,
                }
            )
    return mappings


def redis_write(
    url: str, settings: Settings, mappings: Sequence[dict[str, Any]], batch: int = 1000
) -> float:
    """Seconds one pipelined client takes to write and index `mappings` (an empty index)."""
    spec = ceiling_spec(settings)
    client = cleanup_client(url)  # its FT.DROPINDEX DD deletes every chunk it wrote
    try:
        client.execute_command(*schema_args(spec, settings.embedding.dimensions))
        table = settings.tables[0].qualified_name
        started = time.perf_counter()
        for start in range(0, len(mappings), batch):
            pipe = client.pipeline(transaction=False)
            for mapping in mappings[start : start + batch]:
                key = spec.keys.chunk(table, str(mapping["pk"]), f"c{mapping['chunk']}@1")
                pipe.hset(key, mapping=mapping)
            pipe.execute()
        seconds = time.perf_counter() - started
        docs = num_docs(client, spec.name)
        if docs != len(mappings):
            raise RuntimeError(f"ceiling index holds {docs} docs, not {len(mappings)}")
        client.execute_command("FT.DROPINDEX", spec.name, "DD")
        return seconds
    finally:
        client.close()


def copy_out(dsn: str) -> tuple[float, int]:
    """Seconds to read the documents table with COPY TO STDOUT, and the rows read."""
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
        started = time.perf_counter()
        rows = 0
        with cur.copy("COPY documents TO STDOUT") as copy:
            for block in copy:
                rows += bytes(block).count(b"\n")
        return time.perf_counter() - started, rows

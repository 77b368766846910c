"""What many test modules share (no fixtures here: those are in conftest.py): the tests'
settings, waiting until the index has caught up, comparing it with the tables, and running the
CLI. The services and the daemon themselves are in `connector.testing`."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
import uvicorn

from connector.config import Settings
from connector.core.chunking import Chunker
from connector.core.keys import Keyspace
from connector.core.lsn import Lsn
from connector.core.versions import Manifest, Version
from connector.embed.tokenizer import get_encoding
from connector.ops.verify import compare_table
from connector.query import Searcher, searcher
from connector.serve.api import create_app
from connector.source.catalog import inspect_table
from connector.source.connection import open_snapshot
from connector.source.server import current_wal_lsn
from connector.source.slots import slot_info
from connector.testing import config
from connector.testing.openai_server import FakeOpenAI
from connector.testing.services import free_port

# The `documents` table with small chunks, so short test rows already make several.
DOCUMENTS: dict[str, Any] = {**config.DOCUMENTS, "chunk_tokens": 64, "chunk_overlap": 8}


def make_settings(
    pg_dsn: str,
    redis_url: str,
    tables: list[dict[str, object]] | None = None,
    **sections: dict[str, object],
) -> Settings:
    """Settings for a test: the given services, the hashing embedder, short batch windows."""
    defaults: dict[str, dict[str, Any]] = {
        "postgres": {"slot": "test_slot"},
        "embedding": {"dimensions": 256},
        "pipeline": {"batch_max_wait_ms": 2},
    }
    for name, values in sections.items():
        defaults[name] = {**defaults.get(name, {}), **values}
    return config.settings_for(
        pg_dsn, redis_url, tables if tables is not None else [DOCUMENTS], **defaults
    )


def openai_settings(server: FakeOpenAI, **extra: object) -> dict[str, object]:
    """The embedding section for the fake OpenAI server."""
    return {
        "provider": "openai",
        "model": "text-embedding-3-small",
        "dimensions": server.dimensions,
        "base_url": server.url,
        "api_key": "sk-test-not-a-real-key",
        "timeout_s": 2.0,
        **extra,
    }


# --------------------------------------------------------------------------- the index


def wal_lsn(conn: psycopg.Connection[tuple[object, ...]]) -> str:
    return str(current_wal_lsn(conn))


def synced(settings: Settings, dsn: str, timeout_s: float = 30) -> Searcher:
    """Wait until the index has applied everything committed so far."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        lsn = wal_lsn(conn)
    found = searcher(settings)
    found.wait_for(lsn, timeout_s)
    return found


def assert_index_equals_table(settings: Settings, dsn: str) -> None:
    client = redis.Redis.from_url(settings.redis.url.get_secret_value())
    with open_snapshot(dsn, None) as conn:
        for table in settings.tables:
            info = inspect_table(conn, table)
            chunker = Chunker(
                get_encoding(settings.embedding.model), table.chunk_tokens, table.chunk_overlap
            )
            drift = compare_table(conn, client, info, chunker, settings.postgres.slot)
            assert drift.clean, drift.summary()
    client.close()


def newest_version(client: redis.Redis, keys: Keyspace, table: str, key: str) -> Version:
    """The newest version of a row in its manifest."""
    version = Manifest.parse(client.hgetall(keys.row(table, key))).newest
    assert version is not None, f"row {key} of {table} has no version"
    return version


def keys_of(found: Searcher, text: str, k: int = 10, **kw: object) -> list[tuple[str, ...]]:
    return [hit.key for hit in found.search(text, k=k, **kw)]  # type: ignore[arg-type]


def confirmed_lsn(dsn: str, slot: str = "test_slot") -> Lsn:
    """The slot's confirmed_flush_lsn: what Postgres was told it may release."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        info = slot_info(conn, slot)
    assert info is not None and info.confirmed_flush_lsn is not None
    return info.confirmed_flush_lsn


# --------------------------------------------------------------------------- rows and the CLI


def insert(dsn: str, *rows: tuple[int, str, str]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for row in rows:
            conn.execute("INSERT INTO documents (id, title, body) VALUES (%s, %s, %s)", row)


def incompressible(n: int) -> str:
    """`n` random words: a body that compression does not shrink (it stays TOASTed)."""
    rng = random.Random(42)
    words = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9)))
        for _ in range(n)
    ]
    return " ".join(words)


def cli(config_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`connector ARGS --config FILE`, to completion."""
    return subprocess.run(
        [sys.executable, "-m", "connector.cli", *args, "--config", str(config_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )


# --------------------------------------------------------------------------- the API


@contextmanager
def serving(settings: Settings) -> Iterator[httpx.Client]:
    """The API of `settings` on a free loopback port, and a client for it."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.01)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(10)

"""The benchmarks' environment: throwaway Postgres + Redis Stack, a fresh database and an empty
Redis per scenario, the connector as a daemon subprocess (or in a thread when a benchmark needs
its embedder), and the machine description printed at the start. The services and the daemon
launchers are the tests' (`connector.testing`)."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import platform
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import redis

from connector.config import Settings
from connector.core.lsn import Lsn
from connector.embed import HashingEmbedder
from connector.query import Searcher, close_searchers, searcher
from connector.sink.schema import index_specs
from connector.source.migrate import apply_migrations
from connector.source.server import current_wal_lsn as current_lsn
from connector.testing.config import DOCUMENTS, settings_for
from connector.testing.daemon import DaemonProcess
from connector.testing.services import Services

REPO = Path(__file__).resolve().parent.parent

# The table every benchmark writes is connector.testing.config.DOCUMENTS: the migrations'
# `documents`, as config.example.toml has it.
INDEX = "documents"
TABLE = "public.documents"


def start_services() -> Services:
    """Postgres (+wal2json) and Redis Stack of their own, in a temporary folder, for the run."""
    return Services.start("connector-bench-", external=False)


# --------------------------------------------------------------------------- the machine


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _ram_gb() -> float:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    return 0.0


def machine_info(services: Services) -> dict[str, Any]:
    with psycopg.connect(services.postgres_admin_dsn, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        pg_version = str(row[0]) if row else "?"
    client = redis.Redis.from_url(services.redis_url)
    try:
        info = client.info("server")
        modules = {text(m.get(b"name")): m.get(b"ver") for m in client.module_list()}
    finally:
        client.close()
    search_ver = modules.get("search")
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count() or 0,
        "ram_gb": round(_ram_gb(), 1),
        "python": platform.python_version(),
        "postgresql": pg_version,
        "redis": str(info.get("redis_version", "?")),
        "redisearch": _module_version(search_ver),
        "kernel": platform.release(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def text(value: object) -> str:
    """A Redis reply's bytes (or anything) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def num_docs(client: redis.Redis, index: str = INDEX) -> int:
    """How many documents (chunks) the index holds."""
    info = client.execute_command("FT.INFO", index)
    return int(info.get(b"num_docs", info.get("num_docs", 0)))


def _module_version(value: object) -> str:
    if not isinstance(value, int):
        return str(value)
    return f"{value // 10000}.{value // 100 % 100}.{value % 100}"


# --------------------------------------------------------------------------- scenarios


def bench_settings(
    dsn: str,
    redis_url: str,
    slot: str,
    dimensions: int,
    chunk_tokens: int = 256,
    embedding: dict[str, object] | None = None,
    **pipeline: object,
) -> Settings:
    """The shipped defaults, the hashing embedder (or `embedding`), and no HTTP server."""
    return settings_for(
        dsn,
        redis_url,
        [dict(DOCUMENTS, chunk_tokens=chunk_tokens)],
        postgres={"slot": slot},
        embedding={"dimensions": dimensions, **(embedding or {})},
        pipeline=dict(pipeline),
        observability={"log_level": "INFO"},
    )


@dataclass
class Scenario:
    """A fresh database with the migrations applied, an emptied Redis, and settings for both."""

    services: Services
    dbname: str
    settings: Settings
    workdir: Path

    @property
    def dsn(self) -> str:
        return self.services.dsn(self.dbname)

    @property
    def redis_url(self) -> str:
        return self.services.redis_url

    @property
    def slot(self) -> str:
        return self.settings.postgres.slot

    def connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(self.dsn, autocommit=True)

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def searcher(self) -> Searcher:
        """The Searcher that search(settings=self.settings) uses."""
        return searcher(self.settings)

    @functools.cached_property
    def waiter(self) -> Searcher:
        """A Searcher for `wait_for` only, on a client without redis-py's default 5 s socket
        timeout: one MULTI/EXEC of a big batch can hold Redis longer than that."""
        client = redis.Redis.from_url(self.redis_url, protocol=3, socket_timeout=None)
        spec = next(iter(index_specs(self.settings.tables).values()))
        embedder = HashingEmbedder(self.settings.embedding.dimensions)
        return Searcher(client, spec, embedder, self.slot)

    def wal_lsn(self) -> Lsn:
        with self.connect() as conn:
            return current_lsn(conn)

    def wait_searchable(self, lsn: Lsn, timeout_s: float = 1800) -> None:
        self.waiter.wait_for(lsn, timeout_s=timeout_s)

    def daemon(self, name: str = "connector") -> DaemonProcess:
        """The real daemon (not started), its config and log in this scenario's folder."""
        return DaemonProcess.for_settings(self.settings, self.workdir, name, cwd=REPO)


# --------------------------------------------------------------------------- emptying Redis

# Emptying Redis after a big scenario (1M chunks and their HNSW graph) takes longer than
# redis-py's default 5 s socket timeout when done synchronously: FLUSHALL ASYNC returns at once
# (measured: 16 ms at 50k chunks against 252 ms for a synchronous one) and Redis frees the keys
# in its background thread; this client still allows it minutes.
CLEANUP_TIMEOUT_S = 600.0


def cleanup_client(url: str) -> redis.Redis:
    """A client for emptying Redis and dropping indexes: no 5 s socket timeout."""
    return redis.Redis.from_url(url, socket_timeout=CLEANUP_TIMEOUT_S)


def flush_redis(client: redis.Redis, timeout_s: float = CLEANUP_TIMEOUT_S) -> None:
    """FLUSHALL ASYNC, then wait until Redis's background thread has freed it (the next
    measurement does not share the CPU with it)."""
    client.flushall(asynchronous=True)
    deadline = time.monotonic() + timeout_s
    while int(client.info("memory").get("lazyfree_pending_objects", 0)) > 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"Redis still frees the flushed keys after {timeout_s:.0f} s")
        time.sleep(0.05)


@contextlib.contextmanager
def scenario(
    services: Services,
    dimensions: int = 384,
    chunk_tokens: int = 256,
    embedding: dict[str, object] | None = None,
    **pipeline: object,
) -> Iterator[Scenario]:
    dbname = services.create_database("bench_")
    slot = dbname
    workdir = services.root / "scenarios" / dbname
    workdir.mkdir(parents=True)
    client = cleanup_client(services.redis_url)
    flush_redis(client)
    scene: Scenario | None = None
    try:
        apply_migrations(services.dsn(dbname))
        settings = bench_settings(
            services.dsn(dbname),
            services.redis_url,
            slot,
            dimensions,
            chunk_tokens,
            embedding,
            **pipeline,
        )
        scene = Scenario(services, dbname, settings, workdir)
        yield scene
    finally:
        try:
            _clean_up(services, dbname, scene, client)
        except Exception as exc:
            # Never raised: a failed cleanup must not lose what the benchmark measured, nor
            # hide why it failed (the next scenario empties Redis again before it starts).
            print(f"  WARNING: cleaning up scenario {dbname} failed: {exc!r}", file=sys.stderr)
        finally:
            client.close()


def _clean_up(services: Services, dbname: str, scene: Scenario | None, client: redis.Redis) -> None:
    if scene is not None and "waiter" in scene.__dict__:
        scene.waiter.close()
    close_searchers()
    services.drop_database(dbname)
    client.config_set("notify-keyspace-events", "")
    flush_redis(client)


# --------------------------------------------------------------------------- the connector


def wait_streaming(daemon: DaemonProcess, timeout_s: float = 1800) -> float:
    """Until the initial copy is done and the slot is streamed; returns when (perf_counter) the
    checkpoint was first seen."""
    return daemon.wait_for_checkpoint(timeout_s=timeout_s, streaming=True, poll_s=0.005)


def walsender_pid(conn: psycopg.Connection[Any], slot: str) -> int | None:
    row = conn.execute(
        "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", [slot]
    ).fetchone()
    return int(row[0]) if row and row[0] else None


def quiet_logs() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

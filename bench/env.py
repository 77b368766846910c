"""The benchmarks' environment: throwaway Postgres + Redis Stack, a fresh database and an empty
Redis per scenario, the connector as a daemon subprocess (or in a thread when a benchmark needs
its embedder), and the machine description printed at the start."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import redis
from psycopg import sql

from connector.config import Settings
from connector.core.keys import checkpoint_key
from connector.core.lsn import Lsn
from connector.embed import HashingEmbedder
from connector.embed.base import Embedder
from connector.query import Searcher, close_searchers, searcher
from connector.sink.schema import index_specs
from connector.source.migrate import apply_migrations
from connector.testing.services import PostgresServer, RedisStackServer

REPO = Path(__file__).resolve().parent.parent

# The table every benchmark writes: the migrations' `documents`, as config.example.toml has it.
DOCUMENTS: dict[str, Any] = {
    "name": "public.documents",
    "index": "documents",
    "content": ["title", "body"],
    "metadata": {"source": "tag", "tags": "tag", "updated_at": "numeric"},
    "chunk_tokens": 256,
    "chunk_overlap": 32,
}
INDEX = "documents"
TABLE = "public.documents"


@dataclass
class Services:
    """Postgres (+wal2json) and Redis Stack in a temporary folder, for the whole run."""

    root: Path
    postgres: PostgresServer
    redis: RedisStackServer

    @classmethod
    def start(cls) -> Services:
        root = Path(tempfile.mkdtemp(prefix="connector-bench-"))
        root.chmod(0o755)
        services = cls(root, PostgresServer(root / "postgres"), RedisStackServer(root / "redis"))
        try:
            services.postgres.init()
            services.postgres.start()
            services.redis.start()
        except BaseException:
            services.stop()
            raise
        return services

    def stop(self) -> None:
        self.redis.stop()
        self.postgres.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def redis_url(self) -> str:
        return self.redis.url

    def admin_dsn(self, dbname: str = "postgres") -> str:
        return self.postgres.dsn(dbname)

    def redis_pid(self) -> int | None:
        return self.redis.process.pid if self.redis.process else None


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
    with psycopg.connect(services.admin_dsn(), autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        pg_version = str(row[0]) if row else "?"
    client = redis.Redis.from_url(services.redis_url)
    try:
        info = client.info("server")
        modules = {_text(m.get(b"name")): m.get(b"ver") for m in client.module_list()}
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


def _text(value: object) -> str:
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
    **pipeline: object,
) -> Settings:
    """The shipped defaults, the hashing embedder, and no HTTP server."""
    table = dict(DOCUMENTS, chunk_tokens=chunk_tokens)
    data: dict[str, object] = {
        "postgres": {"dsn": dsn, "slot": slot},
        "redis": {"url": redis_url},
        "embedding": {"provider": "hashing", "dimensions": dimensions},
        "pipeline": dict(pipeline),
        "observability": {"metrics_port": 0, "log_level": "INFO"},
        "tables": [table],
    }
    return Settings(**data)  # type: ignore[arg-type]


@dataclass
class Scenario:
    """A fresh database with the migrations applied, an emptied Redis, and settings for both."""

    services: Services
    dbname: str
    settings: Settings
    workdir: Path

    @property
    def dsn(self) -> str:
        return self.services.admin_dsn(self.dbname)

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


def current_lsn(conn: psycopg.Connection[Any]) -> Lsn:
    row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    return Lsn.parse(str(row[0])) if row else Lsn(0)


@contextlib.contextmanager
def scenario(
    services: Services, dimensions: int = 384, chunk_tokens: int = 256, **pipeline: object
) -> Iterator[Scenario]:
    tag = uuid.uuid4().hex[:10]
    dbname, slot = f"bench_{tag}", f"bench_{tag}"
    with psycopg.connect(services.admin_dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    workdir = services.root / "scenarios" / tag
    workdir.mkdir(parents=True)
    client = redis.Redis.from_url(services.redis_url)
    client.flushall()
    scene: Scenario | None = None
    try:
        apply_migrations(services.admin_dsn(dbname))
        settings = bench_settings(
            services.admin_dsn(dbname),
            services.redis_url,
            slot,
            dimensions,
            chunk_tokens,
            **pipeline,
        )
        scene = Scenario(services, dbname, settings, workdir)
        yield scene
    finally:
        if scene is not None and "waiter" in scene.__dict__:
            scene.waiter.close()
        close_searchers()
        _drop_database(services, dbname)
        client.config_set("notify-keyspace-events", "")
        client.flushall()
        client.close()


def _drop_database(services: Services, dbname: str) -> None:
    with psycopg.connect(services.admin_dsn(), autocommit=True) as conn:
        slots = conn.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE database = %s", [dbname]
        ).fetchall()
        for (slot,) in slots:
            conn.execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                "WHERE slot_name = %s AND active_pid IS NOT NULL",
                [slot],
            )
            with contextlib.suppress(psycopg.Error):
                conn.execute("SELECT pg_drop_replication_slot(%s)", [slot])
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
        )


# --------------------------------------------------------------------------- the connector


def write_config(path: Path, settings: Settings) -> Path:
    """The settings as a TOML file for `connector run --config` (as tests/test_sync.py does)."""
    data = json.loads(settings.model_dump_json())
    data["postgres"]["dsn"] = settings.postgres.dsn.get_secret_value()
    data["redis"]["url"] = settings.redis.url.get_secret_value()
    lines = []
    for name in ("postgres", "redis", "embedding", "pipeline", "observability"):
        lines.append(f"[{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in data[name].items() if v is not None]
    for table in data["tables"]:
        lines.append("[[tables]]")
        for k, v in table.items():
            if v is None:
                continue
            if isinstance(v, dict):
                inner = ", ".join(f"{ik} = {json.dumps(iv)}" for ik, iv in v.items())
                lines.append(f"{k} = {{ {inner} }}")
            else:
                lines.append(f"{k} = {json.dumps(v)}")
    path.write_text("\n".join(lines) + "\n")
    return path


class ConnectorProcess:
    """`python -m connector.cli run --config FILE` as a subprocess (the real daemon)."""

    def __init__(self, scene: Scenario, name: str = "connector") -> None:
        self.scene = scene
        self.config = write_config(scene.workdir / f"{name}.toml", scene.settings)
        self.log = scene.workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("connector process not started")
        return self.process.pid

    def start(self) -> ConnectorProcess:
        with self.log.open("ab") as out:
            self.started_at = time.perf_counter()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "connector.cli", "run", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        return self

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"the connector exited ({self.process.returncode}):\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def restarts(self) -> list[str]:
        """The log lines where the daemon tore its stream down and reconnected."""
        if not self.log.exists():
            return []
        return [
            line
            for line in self.log.read_text(errors="replace").splitlines()
            if "reconnecting in" in line
        ]

    def wait_streaming(self, timeout_s: float = 1800) -> float:
        """Wait until the checkpoint exists (initial copy done) and the slot is being streamed;
        returns the time (perf_counter) the checkpoint was first seen."""
        client = self.scene.redis()
        deadline = time.perf_counter() + timeout_s
        seen = 0.0
        try:
            with self.scene.connect() as conn:
                while True:
                    self.check_alive()
                    if not seen and client.exists(checkpoint_key(self.scene.slot)):
                        seen = time.perf_counter()
                    if seen and slot_active(conn, self.scene.slot):
                        return seen
                    if time.perf_counter() > deadline:
                        raise TimeoutError(f"connector not streaming:\n{self.tail()}")
                    time.sleep(0.005)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> ConnectorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def slot_active(conn: psycopg.Connection[Any], slot: str) -> bool:
    row = conn.execute(
        "SELECT active FROM pg_replication_slots WHERE slot_name = %s", [slot]
    ).fetchone()
    return bool(row and row[0])


def slot_exists(conn: psycopg.Connection[Any], slot: str) -> bool:
    row = conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", [slot]).fetchone()
    return row is not None


def walsender_pid(conn: psycopg.Connection[Any], slot: str) -> int | None:
    row = conn.execute(
        "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", [slot]
    ).fetchone()
    return int(row[0]) if row and row[0] else None


class ThreadConnector:
    """The Connector in a thread of this process, with an embedder the benchmark supplies (so
    it can count what is sent to it)."""

    def __init__(self, settings: Settings, embedder: Embedder) -> None:
        from connector.flow.daemon import Connector

        self.connector = Connector(settings, embedder)
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name="bench-connector", daemon=True)

    def _run(self) -> None:
        try:
            self.connector.run()
        except BaseException as exc:
            self.errors.append(exc)

    def __enter__(self) -> ThreadConnector:
        self.thread.start()
        deadline = time.monotonic() + 600
        while not self.connector.ready.wait(0.05):
            if self.errors:
                raise self.errors[0]
            if time.monotonic() > deadline:
                raise TimeoutError("connector did not become ready")
        return self

    def __exit__(self, *exc: object) -> None:
        self.connector.stop()
        self.thread.join(30)


def quiet_logs() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

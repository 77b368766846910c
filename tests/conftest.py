"""Real services for the tests: throwaway Postgres (+wal2json) and Redis Stack started once per
session, or external ones from CONNECTOR_TEST_POSTGRES_DSN / CONNECTOR_TEST_REDIS_URL."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import redis
from psycopg import sql

from connector.config import Settings
from connector.sink.redis_client import client_for
from connector.source.migrate import apply_migrations
from connector.testing.services import PostgresServer, RedisStackServer
from tests.fake_openai import FakeOpenAI


@dataclass
class Services:
    postgres_admin_dsn: str
    redis_url: str
    postgres: PostgresServer | None
    redis: RedisStackServer | None


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    external_pg = os.environ.get("CONNECTOR_TEST_POSTGRES_DSN")
    external_redis = os.environ.get("CONNECTOR_TEST_REDIS_URL")
    root = Path(tempfile.mkdtemp(prefix="connector-test-"))
    root.chmod(0o755)
    pg = None if external_pg else PostgresServer(root / "postgres")
    rs = None if external_redis else RedisStackServer(root / "redis")
    try:
        if pg:
            pg.init()
            pg.start()
        if rs:
            rs.start()
        yield Services(
            postgres_admin_dsn=external_pg or (pg.dsn() if pg else ""),
            redis_url=external_redis or (rs.url if rs else ""),
            postgres=pg,
            redis=rs,
        )
    finally:
        if rs:
            rs.stop()
        if pg:
            pg.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def _dsn_for(admin_dsn: str, dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(admin_dsn, dbname=dbname)


@pytest.fixture
def pg_dsn(services: Services) -> Iterator[str]:
    """A fresh, empty database for one test (slots in it are dropped afterwards)."""
    dbname = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(services.postgres_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    yield _dsn_for(services.postgres_admin_dsn, dbname)
    with psycopg.connect(services.postgres_admin_dsn, autocommit=True) as conn:
        for (slot,) in conn.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE database = %s", [dbname]
        ).fetchall():
            conn.execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                "WHERE slot_name = %s AND active_pid IS NOT NULL",
                [slot],
            )
            for _ in range(100):  # the ended walsender takes a moment to let go of the slot
                active = conn.execute(
                    "SELECT active FROM pg_replication_slots WHERE slot_name = %s", [slot]
                ).fetchone()
                if active is None or not active[0]:
                    break
                time.sleep(0.05)
            conn.execute("SELECT pg_drop_replication_slot(%s)", [slot])
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
        )


@pytest.fixture
def migrated_dsn(pg_dsn: str) -> str:
    apply_migrations(pg_dsn)
    return pg_dsn


@pytest.fixture
def redis_url(services: Services) -> Iterator[str]:
    """The Redis Stack server, emptied before and after each test."""
    client = redis.Redis.from_url(services.redis_url)
    client.flushall()
    yield services.redis_url
    client.flushall()
    client.close()


# --------------------------------------------------------------------------- the connector


DOCUMENTS = {
    "name": "public.documents",
    "index": "documents",
    "content": ["title", "body"],
    "metadata": {"source": "tag", "tags": "tag", "updated_at": "numeric"},
    "chunk_tokens": 64,
    "chunk_overlap": 8,
}


def make_settings(
    pg_dsn: str,
    redis_url: str,
    tables: list[dict[str, object]] | None = None,
    **sections: dict[str, object],
) -> Settings:
    """Settings for a test: the given services, the hashing embedder, short batch windows."""
    data: dict[str, object] = {
        "postgres": {"dsn": pg_dsn, "slot": "test_slot"},
        "redis": {"url": redis_url},
        "embedding": {"provider": "hashing", "dimensions": 256},
        "pipeline": {"batch_max_wait_ms": 2},
        "observability": {"metrics_port": 0},
        "tables": tables if tables is not None else [DOCUMENTS],
    }
    for name, values in sections.items():
        merged = dict(data.get(name, {}))  # type: ignore[call-overload]
        merged.update(values)
        data[name] = merged
    return Settings(**data)  # type: ignore[arg-type]


class RunningConnector:
    """A Connector running in a thread of the test process, stopped at the end of the test.
    With `probes`, it has real metrics served with /healthz and /readyz on a loopback port
    (`probe_url`), as `connector run` serves them."""

    def __init__(self, settings: Settings, probes: bool = False) -> None:
        from connector.embed import make_embedder
        from connector.flow.daemon import Connector
        from connector.metrics import HealthServer, Metrics

        self.settings = settings
        self.embedder = make_embedder(settings.embedding, client_for(settings.redis))
        self.metrics = Metrics() if probes else None
        self.connector = Connector(settings, self.embedder, self.metrics)
        self.server: HealthServer | None = None
        if self.metrics is not None:
            embedder = self.embedder
            self.metrics.track_embedder(lambda: embedder.stats, embedder.provider, embedder.model)
            self.server = HealthServer(self.metrics, self.connector.is_ready, "127.0.0.1", 0)
            self.server.start()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def probe_url(self) -> str:
        assert self.server is not None, "started without probes"
        return f"http://127.0.0.1:{self.server.port}"

    def probe(self, path: str) -> tuple[int, str]:
        """GET a probe path: (status, body)."""
        try:
            with urllib.request.urlopen(self.probe_url + path, timeout=5) as response:  # noqa: S310
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            body = exc.read().decode()
            exc.close()
            return exc.code, body

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample of the scraped /metrics, or None when absent."""
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(self.probe("/metrics")[1]):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return None

    def _run(self) -> None:
        try:
            self.connector.run()
        except BaseException as exc:
            self.errors.append(exc)

    def start(self, timeout_s: float = 60) -> RunningConnector:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.connector.ready.wait(0.05):
            if self.errors:
                raise self.errors[0]
            if time.monotonic() > deadline:
                raise TimeoutError("connector did not become ready")
        return self

    def stop(self) -> None:
        self.connector.stop()
        self.thread.join(30)
        self.embedder.close()
        if self.server is not None:
            self.server.stop()
        assert not self.thread.is_alive(), "connector did not stop"
        if self.errors:
            raise self.errors[0]


@pytest.fixture
def run_connector() -> Iterator[Callable[..., RunningConnector]]:
    started: list[RunningConnector] = []

    def start(settings: Settings, probes: bool = False) -> RunningConnector:
        running = RunningConnector(settings, probes)
        started.append(running)
        return running.start()

    yield start
    for running in started:
        if running.thread.is_alive():
            running.stop()
        elif running.server is not None:
            running.server.stop()


@pytest.fixture(autouse=True)
def _close_searchers() -> Iterator[None]:
    yield
    from connector.query import close_searchers

    close_searchers()


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI(dimensions=64).start()
    yield server
    server.stop()

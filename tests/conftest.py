"""Real services for the tests: throwaway Postgres (+wal2json) and Redis Stack started once per
session, or external ones from CONNECTOR_TEST_POSTGRES_DSN / CONNECTOR_TEST_REDIS_URL."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import redis
from psycopg import sql

from connector.devservices import PostgresServer, RedisStackServer
from connector.migrate import apply_migrations


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

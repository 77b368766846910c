"""Real services for the tests: throwaway Postgres (+wal2json) and Redis Stack started once per
session, or external ones from CONNECTOR_TEST_POSTGRES_DSN / CONNECTOR_TEST_REDIS_URL."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis

from connector.config import Settings
from connector.source.migrate import apply_migrations
from connector.testing.daemon import DaemonThread
from connector.testing.openai_server import FakeOpenAI
from connector.testing.services import Services


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    started = Services.start("connector-test-")
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def pg_dsn(services: Services) -> Iterator[str]:
    """A fresh, empty database for one test (slots in it are dropped afterwards)."""
    with services.database("t_") as dsn:
        yield dsn


@pytest.fixture
def migrated_dsn(pg_dsn: str) -> str:
    apply_migrations(pg_dsn)
    return pg_dsn


@pytest.fixture
def admin(redis_url: str) -> Iterator[redis.Redis]:
    """A client on the test Redis whose memory settings are put back after the test."""
    client = redis.Redis.from_url(redis_url)
    saved = {k: client.config_get(k)[k] for k in ("maxmemory", "maxmemory-policy")}
    yield client
    client.config_set("maxmemory", saved["maxmemory"])
    client.config_set("maxmemory-policy", saved["maxmemory-policy"])
    client.close()


@pytest.fixture
def redis_url(services: Services) -> Iterator[str]:
    """The Redis Stack server, emptied before and after each test."""
    client = redis.Redis.from_url(services.redis_url)
    client.flushall()
    yield services.redis_url
    client.flushall()
    client.close()


# --------------------------------------------------------------------------- the connector


@pytest.fixture
def run_connector() -> Iterator[Callable[..., DaemonThread]]:
    """Starts connectors in threads of the test process; stopped at the end of the test."""
    started: list[DaemonThread] = []

    def start(settings: Settings, probes: bool = False) -> DaemonThread:
        running = DaemonThread(settings, probes=probes)
        started.append(running)
        return running.start()

    yield start
    for running in started:
        running.finish()


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

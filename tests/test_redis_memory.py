"""Redis's memory limit against the real daemon: a full Redis is a pause, not a crash; eviction
policies that could delete the index are refused or warned about; lost keys are noticed."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis

from connector.config import Settings
from connector.core.keys import Keyspace, checkpoint_key, deadletter_key
from connector.core.lsn import Lsn
from connector.errors import ConfigError
from connector.ops.status import collect_status
from connector.testing.config import write_config
from connector.testing.daemon import DaemonThread
from tests.support import (
    assert_index_equals_table,
    cli,
    confirmed_lsn,
    insert,
    keys_of,
    make_settings,
    synced,
    wal_lsn,
)

Start = Callable[..., DaemonThread]
KEYS = Keyspace("documents")


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def syncs_with_a_warning(
    settings: Settings, run_connector: Start, caplog: pytest.LogCaptureFixture, *words: str
) -> None:
    """The connector starts and syncs a row, having warned with all of `words` in its log, and
    `status` warns too."""
    dsn = settings.postgres.dsn.get_secret_value()
    caplog.set_level(logging.WARNING, logger="connector")
    run_connector(settings)
    insert(dsn, (1, "warned", "still synced"))
    assert keys_of(synced(settings, dsn), "still synced", k=1) == [("1",)]
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert any(all(word in message for word in words) for message in warnings), warnings
    assert any(words[0] in w for w in collect_status(settings).warnings)
    assert_index_equals_table(settings, dsn)


def test_a_full_redis_pauses_the_daemon_which_catches_up_once_memory_is_free(
    migrated_dsn: str,
    redis_url: str,
    run_connector: Start,
    admin: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(migrated_dsn, redis_url, pipeline={"status_interval_s": 0.2})
    running = run_connector(settings, probes=True)
    insert(
        migrated_dsn, *[(i, f"before {i}", f"written before Redis filled up {i}") for i in range(5)]
    )
    synced(settings, migrated_dsn)
    wait_until(lambda: running.probe("/readyz")[0] == 200, "ready")
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        held = Lsn.parse(wal_lsn(conn))  # what Redis holds; nothing after it may be confirmed

    caplog.set_level(logging.INFO, logger="connector")
    admin.config_set("maxmemory", 1)  # every write is refused from now on (noeviction)
    insert(
        migrated_dsn,
        *[(i, f"during {i}", f"committed while Redis was full {i}") for i in range(10, 30)],
    )
    wait_until(lambda: running.metric("connector_redis_oom") == 1.0, "connector_redis_oom = 1")
    assert running.probe("/readyz")[0] == 503
    time.sleep(2.0)  # several retries with backoff
    assert running.thread.is_alive() and not running.errors, running.errors
    assert confirmed_lsn(migrated_dsn) <= held, "confirmed an LSN Redis does not hold"
    assert admin.xlen(deadletter_key("documents")) == 0
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and "maxmemory" in r.message]
    assert len(errors) == 1, [r.message for r in errors]  # one per episode, not one per retry
    assert "used_memory" in errors[0].message and "raise maxmemory" in errors[0].message

    admin.config_set("maxmemory", 0)
    found = synced(settings, migrated_dsn, timeout_s=60)
    assert keys_of(found, "committed while Redis was full 29", k=1) == [("29",)]
    wait_until(lambda: running.metric("connector_redis_oom") == 0.0, "connector_redis_oom = 0")
    wait_until(lambda: running.probe("/readyz")[0] == 200, "ready again")
    wait_until(lambda: confirmed_lsn(migrated_dsn) > held, "the catch-up confirmed to Postgres")
    assert admin.xlen(deadletter_key("documents")) == 0
    assert any("accepts writes again" in r.message for r in caplog.records)
    assert_index_equals_table(settings, migrated_dsn)


def test_an_allkeys_policy_refuses_to_start_unless_allowed(
    migrated_dsn: str,
    redis_url: str,
    run_connector: Start,
    admin: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    admin.config_set("maxmemory-policy", "allkeys-lru")
    settings = make_settings(migrated_dsn, redis_url)
    with pytest.raises(ConfigError) as refused:
        run_connector(settings)
    message = str(refused.value)
    for words in ("maxmemory-policy is allkeys-lru", "evict", "noeviction", "allow_eviction"):
        assert words in message
    assert any("allkeys-lru" in w for w in collect_status(settings).warnings)

    allowed = make_settings(migrated_dsn, redis_url, redis={"allow_eviction": True})
    syncs_with_a_warning(allowed, run_connector, caplog, "allkeys-lru", "allow_eviction = true")


def test_a_volatile_policy_warns_about_tombstones_and_cached_vectors(
    migrated_dsn: str,
    redis_url: str,
    run_connector: Start,
    admin: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    admin.config_set("maxmemory-policy", "volatile-lru")
    settings = make_settings(migrated_dsn, redis_url)
    syncs_with_a_warning(settings, run_connector, caplog, "volatile-lru", "tombstones", "vectors")


def test_a_redis_that_refuses_config_is_said_to_be_unchecked(
    migrated_dsn: str,
    redis_url: str,
    run_connector: Start,
    admin: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Managed Redis services refuse CONFIG: the connector runs, and says it could not check."""
    admin.execute_command(
        "ACL", "SETUSER", "managed", "on", ">managed-pw", "~*", "&*", "+@all", "-config"
    )  # type: ignore[no-untyped-call]
    parts = urlsplit(redis_url)
    url = urlunsplit(parts._replace(netloc=f"managed:managed-pw@{parts.hostname}:{parts.port}"))
    try:
        settings = make_settings(migrated_dsn, url)
        syncs_with_a_warning(settings, run_connector, caplog, "could not check", "maxmemory-policy")
    finally:
        admin.execute_command("ACL", "DELUSER", "managed")  # type: ignore[no-untyped-call]


def test_status_and_verify_notice_keys_evicted_after_start(
    migrated_dsn: str, redis_url: str, run_connector: Start, tmp_path: Path
) -> None:
    """Keys gone behind the connector's back (what eviction does): status and verify say so;
    repair and a restart bring the index back to the table."""
    settings = make_settings(migrated_dsn, redis_url)
    insert(migrated_dsn, *[(i, f"title {i}", f"a body to index, row {i}") for i in range(1, 21)])
    running = run_connector(settings)
    synced(settings, migrated_dsn)
    running.stop()
    config = write_config(tmp_path / "connector.toml", settings)
    client = redis.Redis.from_url(redis_url)
    chunks = sorted(client.scan_iter(match=f"{KEYS.chunk_prefix}*"))
    client.unlink(*chunks[:3])
    done = cli(config, "verify")
    assert done.returncode == 1 and "stale 3" in done.stdout, done.stdout

    client.unlink(checkpoint_key(settings.postgres.slot))  # and then the visible LSN with it
    warnings = collect_status(settings).warnings
    assert any("holds 17 chunks but its row manifests list 20" in w for w in warnings), warnings
    assert any("no checkpoint" in w and "lost" in w for w in warnings), warnings
    done = cli(config, "verify")
    assert done.returncode == 1
    assert "missing 20" in done.stdout  # readers see no version without the visible LSN
    assert "checkpoint: Redis holds no checkpoint" in done.stdout

    run_connector(settings)  # no checkpoint: it resynchronises from a snapshot
    synced(settings, migrated_dsn)
    done = cli(config, "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not [w for w in collect_status(settings).warnings if "manifests" in w]
    assert_index_equals_table(settings, migrated_dsn)
    client.close()

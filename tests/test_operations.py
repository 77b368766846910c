"""Operations against the real services: status, replay, resync, verify, slot safety, metrics,
probes and graceful shutdown."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import redis

from connector.config import Settings
from connector.core.keys import Keyspace
from connector.core.lsn import Lsn
from connector.embed import make_embedder
from connector.errors import SlotLostError
from connector.ops.replay import rewind
from connector.ops.resync import resync
from connector.ops.verify import verify
from connector.sink.checkpoint import read_checkpoint
from connector.sink.redis_client import connect
from connector.testing.config import write_config
from connector.testing.daemon import DaemonThread, spawn
from connector.testing.services import free_port
from tests.support import (
    assert_index_equals_table,
    cli,
    confirmed_lsn,
    insert,
    make_settings,
    newest_version,
    synced,
    wal_lsn,
)

Start = Callable[[Settings], DaemonThread]
KEYS = Keyspace("documents")
TABLE = "public.documents"


def drop_row_keys(client: redis.Redis, key: str) -> None:
    client.delete(KEYS.row(TABLE, key), *client.keys(f"{KEYS.chunk_prefix}{TABLE}:{key}:*"))


def first_chunk(client: redis.Redis, key: str) -> str:
    """The key of the first chunk of a row's newest version."""
    return KEYS.chunk(TABLE, key, newest_version(client, KEYS, TABLE, key).chunks[0])


def test_status_reports_the_slot_and_the_checkpoint_and_lag_grows_while_stopped(
    migrated_dsn: str, redis_url: str, run_connector: Start, tmp_path: Path
) -> None:
    settings = make_settings(migrated_dsn, redis_url)
    config = write_config(tmp_path / "connector.toml", settings)
    running = run_connector(settings)
    insert(migrated_dsn, (1, "a", "first row"))
    synced(settings, migrated_dsn)
    time.sleep(1.5)  # let the confirmation reach Postgres
    running.stop()
    first = json.loads(cli(config, "status", "--json").stdout)
    client = connect(redis_url)
    checkpoint = read_checkpoint(client, "test_slot")
    assert checkpoint is not None
    assert first["slot_exists"] and not first["slot_active"]
    assert first["confirmed_flush_lsn"] == str(confirmed_lsn(migrated_dsn))
    assert first["checkpoint_lsn"] == str(checkpoint.lsn)
    assert first["indexes"][0]["rows"] == 1 and first["indexes"][0]["chunks"] == 1
    insert(migrated_dsn, *[(i, "t", "while stopped " * 20) for i in range(2, 50)])
    second = json.loads(cli(config, "status", "--json").stdout)
    assert second["lag_bytes"] > first["lag_bytes"] + 1000
    assert second["lag_seconds"] > 0
    human = cli(config, "status").stdout
    assert "confirmed flush" in human and str(checkpoint.lsn) in human
    assert "postgres@" not in human and "secret" not in human
    client.close()


def test_replay_from_a_saved_lsn_reapplies_exactly_the_changes_after_it(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    settings = make_settings(migrated_dsn, redis_url, pipeline={"replay_window_s": 3600})
    running = run_connector(settings)
    insert(migrated_dsn, (1, "before", "written before the saved position"))
    synced(settings, migrated_dsn)
    client = connect(redis_url)
    saved = read_checkpoint(client, "test_slot")
    assert saved is not None
    insert(migrated_dsn, (2, "after", "first change after"), (3, "after", "second change after"))
    synced(settings, migrated_dsn)
    running.stop()
    for key in ("1", "2", "3"):  # Redis loses them (say, restored from an older backup)
        drop_row_keys(client, key)
    rewind(settings, saved.lsn)
    run_connector(settings)
    synced(settings, migrated_dsn)
    drift = verify(settings)[0]
    assert drift.missing == ["1"], "only the changes after the saved LSN are re-applied"
    assert not drift.stale and not drift.orphaned
    client.close()


def test_replay_from_an_lsn_the_slot_no_longer_has_says_resync(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    settings = make_settings(migrated_dsn, redis_url)
    running = run_connector(settings)
    insert(migrated_dsn, (1, "a", "one"))
    synced(settings, migrated_dsn)
    old = Lsn(0x100)
    time.sleep(1.5)
    running.stop()
    with pytest.raises(SlotLostError, match=r"no longer holds changes before .*connector resync"):
        rewind(settings, old)


def test_flushall_while_running_is_noticed_and_resynchronised(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    settings = make_settings(migrated_dsn, redis_url)
    run_connector(settings)
    insert(migrated_dsn, *[(i, f"t{i}", f"body {i}") for i in range(1, 30)])
    synced(settings, migrated_dsn)
    client = connect(redis_url)
    client.flushall()
    insert(migrated_dsn, (100, "after", "the flush"))
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        lsn = wal_lsn(conn)
    deadline = time.monotonic() + 60
    while True:
        checkpoint = read_checkpoint(client, "test_slot")
        if checkpoint is not None and checkpoint.lsn >= Lsn.parse(lsn):
            break
        assert time.monotonic() < deadline, "the connector did not resynchronise"
        time.sleep(0.1)
    assert_index_equals_table(settings, migrated_dsn)
    client.close()


def test_slot_dropped_while_stopped_is_recreated_and_resynchronised(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    settings = make_settings(migrated_dsn, redis_url)
    running = run_connector(settings)
    insert(migrated_dsn, (1, "a", "one"), (2, "b", "two"))
    synced(settings, migrated_dsn)
    running.stop()
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        deadline = time.monotonic() + 10
        while conn.execute(  # the walsender may take a moment to let go of the slot
            "SELECT active FROM pg_replication_slots WHERE slot_name = 'test_slot'"
        ).fetchone() != (False,):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        conn.execute("SELECT pg_drop_replication_slot('test_slot')")
        conn.execute("DELETE FROM documents WHERE id = 1")  # lost with the slot...
        conn.execute("INSERT INTO documents (id, title, body) VALUES (3, 'c', 'three')")
    run_connector(settings)
    synced(settings, migrated_dsn)
    assert_index_equals_table(settings, migrated_dsn)  # ...but the resync catches it


def test_verify_finds_drift_and_repair_fixes_it(
    migrated_dsn: str, redis_url: str, run_connector: Start, tmp_path: Path
) -> None:
    settings = make_settings(migrated_dsn, redis_url)
    config = write_config(tmp_path / "connector.toml", settings)
    running = run_connector(settings)
    insert(migrated_dsn, *[(i, f"title {i}", f"body of row {i}") for i in range(1, 6)])
    synced(settings, migrated_dsn)
    running.stop()
    client = connect(redis_url)
    client.delete(first_chunk(client, "1"))  # a chunk deleted by hand
    client.hset(first_chunk(client, "2"), "content", "edited by hand")  # a chunk edited
    visible = read_checkpoint(client, settings.postgres.slot).visible  # type: ignore[union-attr]
    assert visible is not None
    orphan = f"orphan@{visible.value}"  # a row the table does not have, visible to readers
    client.hset(KEYS.row(TABLE, "999"), str(visible.value), f";{orphan}")
    client.hset(KEYS.chunk(TABLE, "999", orphan), mapping={"content": "orphan", "table": TABLE})
    found = cli(config, "verify")
    assert found.returncode == 1, found.stdout + found.stderr
    assert "stale 2" in found.stdout and "orphaned 1" in found.stdout
    repaired = cli(config, "verify", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    again = cli(config, "verify")
    assert again.returncode == 0 and "missing 0, stale 0, orphaned 0" in again.stdout
    client.close()


def test_writes_to_another_table_keep_the_slot_moving(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE unrelated (id serial PRIMARY KEY, payload text)")
    settings = make_settings(migrated_dsn, redis_url)
    run_connector(settings)
    time.sleep(1.5)
    before = confirmed_lsn(migrated_dsn)
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        for _ in range(20):
            conn.execute("INSERT INTO unrelated (payload) VALUES (repeat('x', 1000))")
        target = Lsn.parse(wal_lsn(conn))
    deadline = time.monotonic() + 20
    while confirmed_lsn(migrated_dsn) < target:
        assert time.monotonic() < deadline, "the slot did not move past the other table's writes"
        time.sleep(0.2)
    assert confirmed_lsn(migrated_dsn) > before


def test_metrics_and_readiness(migrated_dsn: str, redis_url: str) -> None:
    from connector.metrics import HealthServer, Metrics
    from connector.testing.daemon import DaemonThread

    insert(migrated_dsn, *[(i, f"t{i}", f"existing row {i}") for i in range(1, 200)])
    settings = make_settings(migrated_dsn, redis_url, pipeline={"status_interval_s": 0.2})
    running = DaemonThread(settings)
    metrics = Metrics()
    running.connector.metrics = metrics
    metrics.track_embedder(lambda: running.embedder.stats, "hashing", "hashing-v1")
    server = HealthServer(metrics, running.connector.is_ready, "127.0.0.1", free_port()).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert _get(base + "/readyz")[0] == 503  # not started: not ready
        running.start()
        insert(migrated_dsn, *[(i, f"t{i}", f"new row {i}") for i in range(1000, 1050)])
        with psycopg.connect(migrated_dsn, autocommit=True) as conn:
            conn.execute("UPDATE documents SET body = 'changed' WHERE id < 10")
            conn.execute("DELETE FROM documents WHERE id BETWEEN 10 AND 14")
        synced(settings, migrated_dsn)
        deadline = time.monotonic() + 10
        while _get(base + "/readyz")[0] != 200:
            assert time.monotonic() < deadline, "never became ready after catching up"
            time.sleep(0.1)
        assert _get(base + "/healthz") == (200, "ok\n")
        text = _get(base + "/metrics")[1]
        assert 'connector_changes_applied_total{op="insert"} 50.0' in text
        assert 'connector_changes_applied_total{op="update"} 9.0' in text
        assert 'connector_changes_applied_total{op="delete"} 5.0' in text
        assert "connector_commit_to_searchable_seconds_count" in text
        assert 'connector_embedding_texts_total{model="hashing-v1",provider="hashing"}' in text
        assert "connector_slot_retained_wal_bytes" in text
    finally:
        server.stop()
        running.stop()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback test
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        body = exc.read().decode()
        exc.close()
        return exc.code, body


def test_sigterm_during_a_stream_exits_0_and_a_restart_loses_nothing(
    migrated_dsn: str, redis_url: str, tmp_path: Path
) -> None:
    # The promise: a SIGTERM under a writer ends the daemon within pipeline.shutdown_timeout_s,
    # its threads stopped. A small queue keeps a backlog in the stream, which a reader that
    # read on after the stop (waiting on the full queue for each transaction) never got through.
    shutdown_s = 5.0
    pipeline = {"shutdown_timeout_s": shutdown_s, "queue_max_changes": 10}
    settings = make_settings(migrated_dsn, redis_url, pipeline=pipeline)
    config = write_config(tmp_path / "connector.toml", settings)
    log = tmp_path / "connector.log"
    process = spawn(config, log)
    stop = threading.Event()

    def write() -> None:
        with psycopg.connect(migrated_dsn, autocommit=True) as conn:
            i = 0
            while not stop.is_set():
                i += 1
                conn.execute("INSERT INTO documents (title, body) VALUES (%s, 'stream')", [f"{i}"])
                conn.execute("UPDATE documents SET body = body || ' more' WHERE id = %s", [i // 2])

    client = connect(redis_url)
    try:
        while read_checkpoint(client, "test_slot") is None:
            assert process.poll() is None, log.read_text()
            time.sleep(0.05)
        writer = threading.Thread(target=write)
        writer.start()
        time.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(shutdown_s) == 0, log.read_text()
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"still running {shutdown_s}s after SIGTERM:\n{log.read_text()}"
            ) from None
        assert "did not stop in time" not in log.read_text(), log.read_text()
        time.sleep(0.3)
        stop.set()
        writer.join()
        process = spawn(config, log)
        synced(settings, migrated_dsn, timeout_s=60)
        assert_index_equals_table(settings, migrated_dsn)
    finally:
        stop.set()
        process.terminate()
        process.wait(30)
        client.close()


def test_searches_keep_answering_during_resync(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO documents (title, body) SELECT 'row ' || i, 'filler text number ' || i "
            "FROM generate_series(1, 3000) i"
        )
        conn.execute("INSERT INTO documents (id, title, body) VALUES (9999, 'needle', "
                     "'the unmistakable needle in the haystack')")  # fmt: skip
    settings = make_settings(migrated_dsn, redis_url)
    run_connector(settings)
    found = synced(settings, migrated_dsn)
    answers: list[bool] = []
    done = threading.Event()

    def search() -> None:
        while not done.is_set():
            hits = found.search("unmistakable needle haystack", k=3)
            answers.append(("9999",) in [hit.key for hit in hits])

    thread = threading.Thread(target=search)
    thread.start()
    try:
        report = resync(settings, make_embedder(settings.embedding), ["documents"])
    finally:
        done.set()
        thread.join()
    assert report.rows == 3001 and report.embedded == 0  # unchanged text kept its vectors
    assert len(answers) > 10 and all(answers), "a search during the resync missed the row"
    assert_index_equals_table(settings, migrated_dsn)

"""Metrics against the real daemon: every metric the README names moves in one run (the
scrape and probe server alone: tests/unit/test_metrics.py)."""

from __future__ import annotations

import time
from typing import Any

import psycopg

from connector.testing.openai_server import Fault
from tests.support import make_settings, openai_settings, synced


def test_every_metric_moves_while_the_real_daemon_falls_behind_and_catches_up(
    migrated_dsn: str, redis_url: str, run_connector: Any, fake_openai: Any
) -> None:
    """A slow embedding server holds the daemon behind: lag shows, then goes back to zero; every
    metric the README names moves in the same run."""
    fake_openai.latency_s = 0.3
    fake_openai.reject_marker = "POISON"
    fake_openai.faults = [Fault(500)]
    settings = make_settings(
        migrated_dsn,
        redis_url,
        embedding=openai_settings(fake_openai),
        pipeline={"status_interval_s": 0.1, "batch_max_rows": 2},
    )
    running = run_connector(settings, probes=True)
    seen: dict[str, float] = {}

    def scrape() -> None:
        for name in ("lag_bytes", "lag_seconds", "slot_retained_wal_bytes"):
            seen[name] = max(seen.get(name, 0.0), running.metric(f"connector_{name}") or 0.0)

    dup = "INSERT INTO documents (id, title, body) VALUES (%s, 'dup', 'same')"
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        conn.execute(dup, [20])  # the same text again, many batches later: the vector cache's
        for i in range(12):  # one transaction each: at least six slow batches
            conn.execute(
                "INSERT INTO documents (id, title, body) VALUES (%s, %s, %s)",
                [i, f"title {i}", f"body {i} " + ("POISON" if i == 5 else "fine")],
            )
        conn.execute(dup, [21])
        conn.execute("UPDATE documents SET body = 'changed' WHERE id = 1")
        conn.execute("DELETE FROM documents WHERE id = 2")
        conn.execute("TRUNCATE documents")
        deadline = time.monotonic() + 30
        while not (seen.get("lag_seconds") and seen.get("lag_bytes")):
            assert time.monotonic() < deadline, f"lag never showed: {seen}"
            scrape()
            time.sleep(0.05)
        conn.execute(  # the walsender dies: the stream restarts from the checkpoint
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
            "WHERE slot_name = %s",
            [settings.postgres.slot],
        )
    synced(settings, migrated_dsn, timeout_s=60)
    deadline = time.monotonic() + 20
    while running.metric("connector_lag_bytes") or running.metric("connector_lag_seconds"):
        assert time.monotonic() < deadline, "lag did not go back to zero after catching up"
        scrape()
        time.sleep(0.05)
    moved = {
        "connector_changes_applied_total": [
            running.metric("connector_changes_applied_total", op=op)
            for op in ("insert", "update", "delete", "truncate")
        ],
        "connector_batch_rows_count": running.metric("connector_batch_rows_count"),
        "connector_batch_seconds_count": running.metric("connector_batch_seconds_count"),
        "connector_commit_to_searchable_seconds_count": running.metric(
            "connector_commit_to_searchable_seconds_count"
        ),
        "connector_checkpoint_lsn": running.metric("connector_checkpoint_lsn"),
        "connector_dead_letters_total": running.metric("connector_dead_letters_total"),
        "connector_stream_restarts_total": running.metric(
            "connector_stream_restarts_total", reason="ReplicationError"
        ),
    }
    labels = {"provider": "openai", "model": "text-embedding-3-small"}
    for field in ("texts", "tokens", "requests", "retries", "failures", "cache_hits"):
        name = f"connector_embedding_{field}_total"
        moved[name] = running.metric(name, **labels)
    flat = {k: v for k, v in moved.items() if not isinstance(v, list)}
    assert all(v for v in moved["connector_changes_applied_total"]), moved  # type: ignore[union-attr]
    assert not [name for name, v in flat.items() if not v], moved
    assert seen["slot_retained_wal_bytes"] > 0, seen
    assert running.metric("connector_redis_oom") == 0.0  # moves in test_redis_memory.py

"""Metrics and the probe server: what a scrape and an orchestrator's probes actually see."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from connector.embed.base import EmbeddingStats
from connector.metrics import HealthServer, Metrics


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, keyed by (name, labels), parsed the way Prometheus would."""
    text = metrics.render().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return samples(metrics)[(name, frozenset(labels.items()))]


def get(port: int, path: str, method: str = "GET") -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        conn.close()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def ready_flag() -> threading.Event:
    return threading.Event()


@pytest.fixture
def server(metrics: Metrics, ready_flag: threading.Event) -> Iterator[HealthServer]:
    with HealthServer(metrics, ready_flag.is_set, host="127.0.0.1", port=0) as running:
        yield running


def test_counters_record_changes_dead_letters_and_restarts(metrics: Metrics) -> None:
    metrics.changes_applied("insert", 3)
    metrics.changes_applied("insert", 2)
    metrics.changes_applied("delete", 1)
    metrics.dead_lettered(4)
    metrics.restarted("redis")
    metrics.restarted("redis")
    metrics.restarted("replication")

    assert value(metrics, "connector_changes_applied_total", op="insert") == 5
    assert value(metrics, "connector_changes_applied_total", op="delete") == 1
    # the other operations are exported from the start, at zero
    assert value(metrics, "connector_changes_applied_total", op="update") == 0
    assert value(metrics, "connector_changes_applied_total", op="truncate") == 0
    assert value(metrics, "connector_dead_letters_total") == 4
    assert value(metrics, "connector_stream_restarts_total", reason="redis") == 2
    assert value(metrics, "connector_stream_restarts_total", reason="replication") == 1


def test_histograms_bucket_batches_and_visibility(metrics: Metrics) -> None:
    metrics.batch_applied(rows=7, seconds=0.2)
    metrics.batch_applied(rows=700, seconds=1.5)
    metrics.visible_after(0.004)
    metrics.visible_after(-0.5)  # clock skew: counted as zero, never a negative sum

    assert value(metrics, "connector_batch_rows_count") == 2
    assert value(metrics, "connector_batch_rows_sum") == 707
    assert value(metrics, "connector_batch_rows_bucket", le="10.0") == 1
    assert value(metrics, "connector_batch_rows_bucket", le="1000.0") == 2
    assert value(metrics, "connector_batch_rows_bucket", le="10000.0") == 2
    assert value(metrics, "connector_batch_seconds_sum") == pytest.approx(1.7)
    assert value(metrics, "connector_batch_seconds_bucket", le="0.25") == 1

    visible = "connector_commit_to_searchable_seconds"
    assert value(metrics, f"{visible}_count") == 2
    assert value(metrics, f"{visible}_sum") == pytest.approx(0.004)
    assert value(metrics, f"{visible}_bucket", le="0.001") == 1
    assert value(metrics, f"{visible}_bucket", le="0.005") == 2
    assert value(metrics, f"{visible}_bucket", le="60.0") == 2


def test_gauges_hold_the_latest_value(metrics: Metrics) -> None:
    metrics.set_lag(4096, 1.25)
    metrics.set_lag(1024, 0.5)
    metrics.set_retained_wal(16 * 1024 * 1024)
    lsn = (0x16 << 32) | 0xB374D848
    metrics.set_checkpoint(lsn)

    assert value(metrics, "connector_lag_bytes") == 1024
    assert value(metrics, "connector_lag_seconds") == 0.5
    assert value(metrics, "connector_slot_retained_wal_bytes") == 16 * 1024 * 1024
    assert value(metrics, "connector_checkpoint_lsn") == lsn


def test_embedder_stats_are_read_at_scrape_time(metrics: Metrics) -> None:
    stats = EmbeddingStats()
    metrics.track_embedder(lambda: stats, "openai", "text-embedding-3-small")
    labels = {"provider": "openai", "model": "text-embedding-3-small"}
    assert value(metrics, "connector_embedding_texts_total", **labels) == 0

    stats.texts, stats.tokens, stats.requests = 10, 250, 2
    stats.retries, stats.failures, stats.cache_hits = 1, 0, 6

    assert value(metrics, "connector_embedding_texts_total", **labels) == 10
    assert value(metrics, "connector_embedding_tokens_total", **labels) == 250
    assert value(metrics, "connector_embedding_requests_total", **labels) == 2
    assert value(metrics, "connector_embedding_retries_total", **labels) == 1
    assert value(metrics, "connector_embedding_failures_total", **labels) == 0
    assert value(metrics, "connector_embedding_cache_hits_total", **labels) == 6

    stats.texts += 5
    assert value(metrics, "connector_embedding_texts_total", **labels) == 15


def test_a_replaced_or_broken_embedder_does_not_break_the_scrape(metrics: Metrics) -> None:
    metrics.track_embedder(lambda: EmbeddingStats(texts=1), "hashing", "h")
    metrics.track_embedder(lambda: EmbeddingStats(texts=9), "hashing", "h")  # rebuilt embedder

    def broken() -> EmbeddingStats:
        raise RuntimeError("gone")

    metrics.track_embedder(broken, "local", "minilm")
    assert value(metrics, "connector_embedding_texts_total", provider="hashing", model="h") == 9
    assert not any(dict(labels).get("provider") == "local" for _, labels in samples(metrics))


def test_registries_are_private() -> None:
    first, second = Metrics(), Metrics()
    first.dead_lettered(3)
    assert value(first, "connector_dead_letters_total") == 3
    assert value(second, "connector_dead_letters_total") == 0


def test_probe_endpoints(server: HealthServer, ready_flag: threading.Event) -> None:
    assert server.port > 0
    assert get(server.port, "/healthz")[::2] == (200, b"ok\n")
    assert get(server.port, "/readyz")[::2] == (503, b"not ready\n")
    ready_flag.set()
    assert get(server.port, "/readyz")[::2] == (200, b"ready\n")
    ready_flag.clear()
    assert get(server.port, "/readyz")[0] == 503
    assert get(server.port, "/nope")[0] == 404
    assert get(server.port, "/healthz?verbose=1")[0] == 200


def test_metrics_endpoint_serves_the_exposition(server: HealthServer, metrics: Metrics) -> None:
    metrics.changes_applied("update", 12)
    status, content_type, body = get(server.port, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    applied = families["connector_changes_applied"]
    assert applied.type == "counter"
    assert any(s.labels == {"op": "update"} and s.value == 12 for s in applied.samples)
    head = get(server.port, "/metrics", method="HEAD")
    assert head[0] == 200 and head[2] == b""


def test_failing_readiness_check_is_not_ready(metrics: Metrics) -> None:
    def explode() -> bool:
        raise RuntimeError("boom")

    with HealthServer(metrics, explode, host="127.0.0.1", port=0) as server:
        assert get(server.port, "/readyz")[0] == 503
        assert get(server.port, "/healthz")[0] == 200


def test_bad_requests_do_not_crash_the_server(server: HealthServer) -> None:
    for raw in (b"GARBAGE\r\n\r\n", b"GET /" + b"x" * 70_000 + b" HTTP/1.1\r\n\r\n", b""):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):
                pass
    assert get(server.port, "/metrics", method="POST")[0] == 501
    assert get(server.port, "/healthz")[0] == 200


def test_stop_is_idempotent_and_frees_the_port(metrics: Metrics) -> None:
    server = HealthServer(metrics, lambda: True, host="127.0.0.1", port=0).start()
    port = server.port
    assert get(port, "/healthz")[0] == 200
    server.stop()
    server.stop()
    with pytest.raises(OSError):
        get(port, "/healthz")
    HealthServer(metrics, lambda: True).stop()  # never started: nothing to do

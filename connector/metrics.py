"""Prometheus metrics and the HTTP endpoint that serves them with the liveness/readiness probes.

Each `Metrics` owns a private `CollectorRegistry`, so several can live in one process (tests, a
benchmark next to a daemon) without colliding in prometheus_client's global registry. The
pipeline reports events through the small methods below; nothing here knows about Postgres or
Redis. `HealthServer` is the only I/O: a threaded HTTP server on a daemon thread that answers
`/metrics`, `/healthz` and `/readyz` and never lets a bad request take the process down.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar
from urllib.parse import urlsplit

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric

from connector.embed.base import EmbeddingStats

__all__ = ["CONTENT_TYPE", "HealthServer", "Metrics"]

log = logging.getLogger(__name__)

# The classic text format that generate_latest() writes (newer prometheus_client versions call
# something else "latest", so the version is spelled out).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

OPS = ("insert", "update", "delete", "truncate")
ROW_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000)
SECONDS_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

# EmbeddingStats field -> (metric name without _total, help text)
_EMBEDDING_COUNTERS = (
    ("texts", "connector_embedding_texts", "Texts sent to the embedding provider."),
    ("tokens", "connector_embedding_tokens", "Tokens sent to the embedding provider."),
    ("requests", "connector_embedding_requests", "Requests made to the embedding provider."),
    ("retries", "connector_embedding_retries", "Embedding requests retried after a failure."),
    ("failures", "connector_embedding_failures", "Embedding requests that failed for good."),
    ("cache_hits", "connector_embedding_cache_hits", "Chunks whose vector was reused."),
)

StatsSource = Callable[[], EmbeddingStats]


class _EmbedderCollector:
    """Reads embedders' running `EmbeddingStats` at scrape time, so the embedders need not know
    about Prometheus and the numbers are never stale."""

    def __init__(self) -> None:
        self._sources: dict[tuple[str, str], StatsSource] = {}
        self._lock = threading.Lock()

    def track(self, source: StatsSource, provider: str, model: str) -> None:
        # Keyed by (provider, model): an embedder rebuilt after a restart replaces the old one
        # rather than producing a duplicate series.
        with self._lock:
            self._sources[(provider, model)] = source

    def describe(self) -> Iterable[Metric]:
        """The metric names, so the registry can refuse a clash at registration time."""
        return self._families()

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        with self._lock:
            sources = list(self._sources.items())
        for (provider, model), source in sources:
            try:
                stats = source()
            except Exception:
                # A broken stats source must not fail the whole scrape.
                log.warning("embedding stats for %s/%s unavailable", provider, model, exc_info=True)
                continue
            for family, (field, _, _) in zip(families, _EMBEDDING_COUNTERS, strict=True):
                family.add_metric([provider, model], float(getattr(stats, field)))
        return families

    @staticmethod
    def _families() -> list[CounterMetricFamily]:
        return [
            CounterMetricFamily(name, doc, labels=["provider", "model"])
            for _, name, doc in _EMBEDDING_COUNTERS
        ]


class Metrics:
    """The connector's metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self._changes = Counter(
            "connector_changes_applied",
            "Row changes written to Redis, by operation.",
            ["op"],
            registry=reg,
        )
        for op in OPS:  # present from the first scrape, so rate() has a starting point
            self._changes.labels(op=op)
        self._batch_rows = Histogram(
            "connector_batch_rows",
            "Row changes per applied batch (a group of whole transactions, one flip).",
            buckets=ROW_BUCKETS,
            registry=reg,
        )
        self._batch_seconds = Histogram(
            "connector_batch_seconds",
            "Time to chunk, embed, write and flip one batch (a group of whole transactions).",
            buckets=SECONDS_BUCKETS,
            registry=reg,
        )
        self._visible = Histogram(
            "connector_commit_to_searchable_seconds",
            "From the source commit timestamp to the change being written to Redis.",
            buckets=SECONDS_BUCKETS,
            registry=reg,
        )
        self._lag_bytes = Gauge(
            "connector_lag_bytes",
            "WAL bytes between the server's end and the checkpoint.",
            registry=reg,
        )
        self._lag_seconds = Gauge(
            "connector_lag_seconds",
            "Age of the oldest commit received but not yet applied (0 when caught up).",
            registry=reg,
        )
        self._redis_oom = Gauge(
            "connector_redis_oom",
            "1 while Redis refuses writes at maxmemory (the daemon is paused), else 0.",
            registry=reg,
        )
        self._retained = Gauge(
            "connector_slot_retained_wal_bytes",
            "WAL the replication slot keeps on the server (disk the server cannot free).",
            registry=reg,
        )
        self._dead = Counter(
            "connector_dead_letters", "Rows sent to the dead-letter stream.", registry=reg
        )
        self._failing = Gauge(
            "connector_table_failing",
            "1 while most recent changes of the table are dead-lettered (see `connector status`).",
            ["table"],
            registry=reg,
        )
        self._checkpoint = Gauge(
            "connector_checkpoint_lsn",
            "Last applied commit LSN as a number (exact up to 2**53 bytes of WAL).",
            registry=reg,
        )
        self._restarts = Counter(
            "connector_stream_restarts",
            "Times the stream was torn down and restarted from the checkpoint, by reason.",
            ["reason"],
            registry=reg,
        )
        self._gc_backlog = Gauge(
            "connector_gc_backlog_rows",
            "Superseded rows waiting for garbage collection (their grace period, or the sweep).",
            registry=reg,
        )
        self._gc_removed = Counter(
            "connector_gc_removed",
            "Row versions and chunk hashes garbage collection removed, by kind.",
            ["kind"],
            registry=reg,
        )
        for kind in ("version", "chunk"):
            self._gc_removed.labels(kind=kind)
        self._embedders = _EmbedderCollector()
        reg.register(self._embedders)
        self._engine = Info(
            "connector_redis_engine",
            "The Redis server's and its modules' versions, and the full-text scorer queries name.",
            registry=reg,
        )

    def changes_applied(self, op: str, count: int) -> None:
        """Count `count` applied row changes of kind `op` (insert, update, delete, truncate)."""
        self._changes.labels(op=op).inc(count)

    def batch_applied(self, rows: int, seconds: float) -> None:
        """Record one applied batch: its size and how long it took."""
        self._batch_rows.observe(rows)
        self._batch_seconds.observe(max(seconds, 0.0))

    def visible_after(self, seconds: float) -> None:
        """Record commit-to-searchable latency; clock skew between hosts can make it negative,
        which is counted as zero rather than corrupting the sum."""
        self._visible.observe(max(seconds, 0.0))

    def set_lag(self, lag_bytes: int, lag_seconds: float) -> None:
        """How far behind the source the index is, in WAL bytes and in time."""
        self._lag_bytes.set(lag_bytes)
        self._lag_seconds.set(lag_seconds)

    def set_redis_oom(self, full: bool) -> None:
        """Redis refuses writes at maxmemory (True) or accepts them again (False)."""
        self._redis_oom.set(1 if full else 0)

    def set_retained_wal(self, retained_bytes: int) -> None:
        """WAL the slot pins on the server: the number to alert on before its disk fills."""
        self._retained.set(retained_bytes)

    def dead_lettered(self, count: int) -> None:
        """Count rows that went to the dead-letter stream."""
        self._dead.inc(count)

    def set_table_failing(self, table: str, failing: bool) -> None:
        """A configured table's changes are being dead-lettered (1) or indexed (0)."""
        self._failing.labels(table=table).set(1 if failing else 0)

    def set_checkpoint(self, lsn: int) -> None:
        """The last applied commit LSN (as an integer)."""
        self._checkpoint.set(int(lsn))

    def collected(self, backlog: int, versions: int, chunks: int) -> None:
        """Garbage collection's backlog now, and what one step removed."""
        self._gc_backlog.set(backlog)
        if versions:
            self._gc_removed.labels(kind="version").inc(versions)
        if chunks:
            self._gc_removed.labels(kind="chunk").inc(chunks)

    def set_engine(self, profile: Mapping[str, str | None]) -> None:
        """The Redis engine profile (core.engine's `as_dict`; absent modules are "")."""
        self._engine.info({name: value or "" for name, value in profile.items()})

    def restarted(self, reason: str) -> None:
        """Count one stream restart; `reason` should be a short fixed word (label cardinality)."""
        self._restarts.labels(reason=reason).inc()

    def track_embedder(self, stats_source: StatsSource, provider: str, model: str) -> None:
        """Expose an embedder's running stats, read at every scrape."""
        self._embedders.track(stats_source, provider, model)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric in this registry."""
        return generate_latest(self.registry)


class _Handler(BaseHTTPRequestHandler):
    """Answers the three probe paths; everything else is 404."""

    server: _ProbeHTTPServer
    timeout: ClassVar[float] = 10.0  # a stalled client cannot pin a thread forever
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def _respond(self, *, send_body: bool) -> None:
        status, content_type, body = self.server.route(urlsplit(self.path).path)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Probes hit every few seconds: logging each would drown the connector's own logs."""


class _ProbeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], metrics: Metrics, ready: Callable[[], bool]
    ) -> None:
        self.metrics = metrics
        self.ready = ready
        super().__init__(address, _Handler)

    def route(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for `path`; a failing callback is a 5xx, not a crash."""
        text = "text/plain; charset=utf-8"
        if path == "/healthz":
            return 200, text, b"ok\n"
        if path == "/readyz":
            return (200, text, b"ready\n") if self._is_ready() else (503, text, b"not ready\n")
        if path == "/metrics":
            try:
                return 200, CONTENT_TYPE, self.metrics.render()
            except Exception:
                log.exception("rendering metrics failed")
                return 500, text, b"metrics unavailable\n"
        return 404, text, b"not found\n"

    def _is_ready(self) -> bool:
        try:
            return bool(self.ready())
        except Exception:
            log.warning("readiness check failed", exc_info=True)
            return False

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-answer is routine: note it quietly instead of printing a
        traceback to stderr."""
        log.debug("probe request from %s failed", client_address, exc_info=True)


class HealthServer:
    """`/metrics`, `/healthz` (the process is alive) and `/readyz` (the connector is streaming)
    on a daemon thread, so orchestrators can probe the daemon and Prometheus can scrape it."""

    def __init__(
        self,
        metrics: Metrics,
        ready: Callable[[], bool],
        host: str = "0.0.0.0",  # noqa: S104 (probes come from outside the container)
        port: int = 9108,
    ) -> None:
        self.metrics = metrics
        self.ready = ready
        self.host = host
        self.port = port
        self._server: _ProbeHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> HealthServer:
        """Bind and serve; afterwards `port` is the bound port (useful with port=0)."""
        if self._server is not None:
            return self
        server = _ProbeHTTPServer((self.host, self.port), self.metrics, self.ready)
        self.port = server.server_address[1]
        self._server = server
        # A short poll interval keeps stop() (and so daemon shutdown) prompt.
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.1,), name="connector-probes", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket; safe to call twice."""
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

"""What the daemon checks every `pipeline.status_interval_s`: WAL the slot retains (warn past
`max_retained_wal_bytes`), lag behind the server, heartbeats for idle tables, and the counters
it leaves in Redis for `connector status`."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
import redis

from connector.config import Settings
from connector.core.keys import stats_key
from connector.core.lsn import Lsn
from connector.core.plan import ApplyStats
from connector.embed.base import Embedder
from connector.logs import redact
from connector.metrics import Metrics
from connector.sink.gc import GcStats
from connector.sink.redis_client import Fields
from connector.source.connection import connect
from connector.source.server import emit_heartbeat, table_exists
from connector.source.slots import retained_wal

log = logging.getLogger(__name__)

HEARTBEAT_PREFIX = "connector.heartbeat"


@dataclass(frozen=True, slots=True)
class DaemonSample:
    """Where the daemon is, sampled by the monitor at each check (not connector.progress,
    the progress line of a long job)."""

    checkpoint: Lsn
    stats: ApplyStats
    oldest_pending_commit: float | None  # epoch seconds of the oldest unapplied commit
    collected: GcStats | None = None
    gc_backlog: int = 0


class Monitor(threading.Thread):
    """Runs in a thread of its own, so a Postgres connection gone silent (its queries block)
    never stalls the applier: the reader notices the dead stream and the daemon restarts."""

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        embedder: Embedder,
        metrics: Metrics | None,
        sample: Callable[[], DaemonSample],
        on_lag: Callable[[int], None] = lambda _bytes: None,
    ) -> None:
        super().__init__(name="connector-monitor", daemon=True)
        self.sample = sample
        self.on_lag = on_lag
        self.halt = threading.Event()
        self.settings = settings
        self.client = client
        self.embedder = embedder
        self.metrics = metrics
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._last_check = 0.0
        self._last_activity = time.monotonic()
        self._warned = False

    def run(self) -> None:
        while not self.halt.wait(0.2):
            try:
                self.tick(self.sample())
            except Exception as exc:  # a failed check must not stop the checks
                log.warning("slot check failed: %s", redact(str(exc)))
                self._drop_connection()

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        self.halt.set()
        self._drop_connection()

    def activity(self) -> None:
        """A batch with changes was applied: no heartbeat needed for a while."""
        self._last_activity = time.monotonic()

    def _connection(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.settings.postgres, "monitor")
        return self._conn

    def tick(self, sample: DaemonSample) -> None:
        now = time.monotonic()
        pipeline = self.settings.pipeline
        if pipeline.heartbeat_s and now - self._last_activity >= pipeline.heartbeat_s:
            emit_heartbeat(self._connection(), HEARTBEAT_PREFIX)
            self._last_activity = now
        if now - self._last_check < pipeline.status_interval_s:
            return
        self._last_check = now
        self._check_tables()
        self._check_slot(sample)
        self._save_counters(sample)

    def _check_tables(self) -> None:
        """A renamed or dropped table sends nothing more: say so loudly, every check."""
        for table in self.settings.tables:
            if not table_exists(self._connection(), table.qualified_name):
                log.error(
                    "table %s no longer exists (renamed or dropped?): its changes cannot be "
                    "followed. Fix [[tables]] name and restart, or remove it from the settings",
                    table.qualified_name,
                    extra={"table": table.qualified_name},
                )

    def _check_slot(self, sample: DaemonSample) -> None:
        checkpoint = sample.checkpoint
        position = retained_wal(self._connection(), self.settings.postgres.slot)
        if position is None:
            return
        current, retained = position
        lag_bytes = max(current.value - checkpoint.value, 0)
        self.on_lag(lag_bytes)
        pending = sample.oldest_pending_commit
        lag_seconds = max(time.time() - pending, 0.0) if pending is not None else 0.0
        if self.metrics is not None:
            self.metrics.set_retained_wal(retained)
            self.metrics.set_checkpoint(checkpoint.value)
            self.metrics.set_lag(lag_bytes, lag_seconds)
        limit = self.settings.pipeline.max_retained_wal_bytes
        if retained > limit and not self._warned:
            log.warning(
                "slot %s retains %d bytes of WAL (pipeline.max_retained_wal_bytes = %d): the "
                "connector is falling behind or its confirmations are held (replay window?)",
                self.settings.postgres.slot,
                retained,
                limit,
                extra={"lsn": str(checkpoint)},
            )
        self._warned = retained > limit

    def _save_counters(self, sample: DaemonSample) -> None:
        fields: Fields = {}
        for name, value in dataclasses.asdict(sample.stats).items():
            fields[f"rows_{name}"] = value
        if sample.collected is not None:
            for name, value in dataclasses.asdict(sample.collected).items():
                fields[f"gc_{name}"] = value
            fields["gc_backlog_rows"] = sample.gc_backlog
        for name, value in dataclasses.asdict(self.embedder.stats).items():
            fields[f"embedding_{name}"] = value
        # Redis full: the applier reports it; the counters wait for the next check.
        with contextlib.suppress(redis.OutOfMemoryError):
            self.client.hset(stats_key(self.settings.postgres.slot), mapping=fields)

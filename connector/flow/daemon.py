"""The daemon: stream -> transactions -> batches -> plan (chunk, embed) -> stage -> flip -> confirm.

Five threads, each owning its connection:

- the reader (flow.reader) owns the replication connection and fills a bounded queue
  (flow.queue) with whole transactions, and with bounded pieces of large ones;
- the applier (the caller's thread, here) takes whole transactions in batches bounded by rows
  and by a short time window, skips those at or below the checkpoint, and plans each batch
  (flow.pipeline, flow.applier: decode, chunk, embed), in slices of at most
  `pipeline.batch_max_rows` rows;
- the stager (flow.stager) stages each planned slice in Redis while the next one is planned,
  flips the visible LSN at the end of each batch (one single-key write), and collects garbage;
- the durability thread (flow.durability) waits until Redis has the write on disk (WAITAOF) and
  only then lets the reader confirm that LSN to Postgres;
- the monitor (flow.monitor) checks the slot's lag and retained WAL and sends heartbeats.

Any connection failure tears them down and starts again from the checkpoint in Redis: what
was in flight is read again from the slot, and what Redis already holds is skipped. Here is
that retry loop (`Connector`); one attempt, its connections and threads, is flow.stream's
`Stream`; where it starts, flow.start; what the threads share, flow.state.
"""

from __future__ import annotations

import logging
import threading

import psycopg
import redis

from connector.config import Settings
from connector.core.engine import EngineProfile
from connector.embed.base import Embedder
from connector.errors import (
    ConfigError,
    EmbeddingUnavailable,
    RedisFull,
    ReplicationError,
    ResyncNeeded,
)
from connector.flow.applier import Applier
from connector.flow.health import TableHealth
from connector.flow.state import DaemonState
from connector.flow.stream import Stream
from connector.logs import redact
from connector.metrics import Metrics
from connector.sink.engine import read_profile
from connector.sink.memory import WritePause
from connector.sink.redis_client import client_for

log = logging.getLogger(__name__)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    ReplicationError,
    EmbeddingUnavailable,
    ResyncNeeded,
    RedisFull,
    redis.OutOfMemoryError,
    psycopg.OperationalError,
    psycopg.errors.IdleInTransactionSessionTimeout,  # the server ended the session: reconnect
    redis.ConnectionError,
    redis.TimeoutError,
    OSError,
)


class Connector:
    """Follows the slot and keeps the Redis index equal to the configured tables: one attempt
    (flow.stream) after another, with backoff, and the state that lives across them."""

    def __init__(
        self, settings: Settings, embedder: Embedder, metrics: Metrics | None = None
    ) -> None:
        if not settings.tables:
            raise ConfigError("no tables configured: add a [[tables]] section")
        self.settings = settings
        self.embedder = embedder
        self.metrics = metrics
        self.state = DaemonState(
            batch_rows=settings.pipeline.batch_max_rows,
            redis_pause=WritePause(metrics.set_redis_oom if metrics is not None else None),
            health=TableHealth(settings.postgres.slot, metrics),
        )
        self.stream: Stream | None = None  # the attempt running (or the last one)
        self.engine: EngineProfile | None = None  # the Redis server's, as last read

    @property
    def ready(self) -> threading.Event:
        """Set while an attempt streams (tests wait on it)."""
        return self.state.ready

    @property
    def applier(self) -> Applier | None:
        """The applier of the attempt running (or of the last one): its statistics."""
        return self.stream.applier if self.stream is not None else None

    def stop(self) -> None:
        self.state.stop.set()

    def is_ready(self) -> bool:
        """Streaming, caught up with what the server had at start, not far behind now, and
        Redis accepting writes."""
        state = self.state
        if not state.ready.is_set() or state.checkpoint < state.catch_up_to:
            return False
        if state.redis_pause.full:
            return False
        lag = state.lag_bytes
        return lag is None or lag <= self.settings.observability.ready_max_lag_bytes

    # ----------------------------------------------------------------- the outer loop

    def run(self) -> None:
        """Run until `stop()`; transient failures are retried with backoff, forever."""
        delay = 0.5
        while not self.state.stop.is_set():
            self.state.streamed = False
            try:
                self._attempt()
            except TRANSIENT_ERRORS as exc:
                self.state.ready.clear()
                if self.state.stop.is_set():
                    break
                if self.state.streamed:  # it was streaming again: this is a new outage
                    delay = 0.5
                self._failed(exc, delay)
                self.state.stop.wait(delay)
                delay = min(delay * 2, 30.0)
        log.info("stopped at checkpoint %s", self.state.checkpoint)

    def _attempt(self) -> None:
        self._read_engine()
        with Stream(self.settings, self.embedder, self.metrics, self.state) as stream:
            self.stream = stream
            stream.run()

    def _read_engine(self) -> None:
        """Read the server's engine profile (core.engine): logged at start, and again only
        when it changed (an upgrade, a failover to another server), and exported as a metric."""
        with client_for(self.settings.redis) as client:
            profile = read_profile(client)
        if profile != self.engine:
            log.info("Redis: %s", profile.describe())
            if self.metrics is not None:
                self.metrics.set_engine(profile.as_dict())
        self.engine = profile

    def _failed(self, exc: BaseException, delay: float) -> None:
        """Count and say the failure of an attempt (quietly while Redis stays full)."""
        if self.metrics is not None:
            self.metrics.restarted(type(exc).__name__)
        pause = self.state.redis_pause
        paused = pause.full
        if isinstance(exc, redis.OutOfMemoryError):  # at start: ensure_indexes
            with client_for(self.settings.redis) as client:
                pause.refused(client)
        # The pause's one ERROR said it: a write refused again is no news.
        quiet = paused and isinstance(exc, redis.OutOfMemoryError | RedisFull)
        checkpoint = self.state.checkpoint
        log.log(
            logging.INFO if quiet else logging.WARNING,
            "%s; reconnecting in %.1fs from checkpoint %s",
            redact(str(exc)),
            delay,
            checkpoint,
            extra={"lsn": str(checkpoint)},
        )

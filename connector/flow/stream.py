"""One connection attempt of the daemon: its connections and threads, as fields.

`Stream(...)` opens the attempt (Redis checked, the tables inspected, the indexes prepared, the
applier made, the replication connection open), `run()` streams until it fails, a switch or a
rebuild calls for another attempt, or the daemon stops, and `close()` closes what it opened, in
reverse order. What outlives the attempt (the checkpoint, the batch size, the Redis pause...)
is flow.state's `DaemonState`, owned by flow.daemon's `Connector`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from types import TracebackType

from connector.config import Settings
from connector.core.keys import durable_key
from connector.core.lsn import Lsn
from connector.core.tables import TableInfo, routes
from connector.embed.base import Embedder
from connector.flow.applier import Applier
from connector.flow.durability import Durability
from connector.flow.monitor import DaemonSample, Monitor
from connector.flow.partitions import Partitions, check_overlaps
from connector.flow.pipeline import Pipeline
from connector.flow.queue import ChangeQueue
from connector.flow.reader import Reader
from connector.flow.rebuild import Rebuilds
from connector.flow.stager import Stager
from connector.flow.start import Start
from connector.flow.state import DaemonState, InHand
from connector.flow.targets import close_extra, prepare, targets
from connector.metrics import Metrics
from connector.sink.memory import check_eviction_policy
from connector.sink.redis_client import aof_enabled, client_for
from connector.source.catalog import inspect_table
from connector.source.connection import connect, conninfo
from connector.source.replication import ReplicationConnection
from connector.source.reselect import Reselector
from connector.source.server import current_wal_lsn, server_codec, system_identifier

log = logging.getLogger(__name__)

# Wall time per garbage collection step when the stream is idle.
_GC_IDLE_S = 0.02
# How often the daemon looks at its indexes' records: a rebuild to switch, or one asked for.
_LAYOUT_POLL_S = 0.25
# How often it looks for partitions new to it (partitioned tables only).
_PARTITION_POLL_S = 2.0
# How long the end of an attempt (not a shutdown) waits for each of its threads.
_JOIN_S = 5.0


class Stream:
    """One attempt: opened by the constructor, run once, closed (a context manager)."""

    def __init__(
        self,
        settings: Settings,
        embedder: Embedder,
        metrics: Metrics | None,
        state: DaemonState,
    ) -> None:
        self.settings = settings
        self.embedder = embedder
        self.metrics = metrics
        self.state = state
        self.in_hand = InHand()
        # Ends this attempt's threads (a thread failed, a switch): not the daemon (state.stop).
        self.stop = threading.Event()
        self._deadline: float | None = None  # a shutdown's (monotonic), once one began
        with contextlib.ExitStack() as opened:
            self.client = client_for(settings.redis)
            opened.callback(self.client.close)
            self.repl = ReplicationConnection(settings.postgres)
            opened.callback(self.repl.close)
            self.reselector = Reselector(conninfo(settings.postgres))
            opened.callback(self.reselector.close)
            self.client.ping()
            check_eviction_policy(self.client, settings.redis.allow_eviction)
            self.tables, system_id, self.encoding = self._inspect()
            # The settings are held against the indexes once, at the first start; after that
            # (a switch, a rebuild `connector reindex` asked for) Redis's layouts are followed.
            layouts = prepare(
                self.client, settings, embedder, settings.reindex.auto,
                reconcile=not state.reconciled, system_id=system_id,
            )  # fmt: skip
            state.reconciled = True
            self.targets = targets(layouts, settings, embedder, self.client)
            opened.callback(close_extra, self.targets, embedder)
            self.partitions = Partitions(settings, self.tables)
            opened.callback(self.partitions.close)
            self.applier = Applier(
                self.client, settings, embedder, system_id, self.reselector,
                collect_garbage=True, targets=self.targets, health=state.health,
            )  # fmt: skip
            state.redis_pause.recheck(self.client)  # one episode across attempts: one ERROR
            self.rebuilds = Rebuilds(settings, layouts, self.targets)
            opened.callback(self.rebuilds.close)
            self.repl.connect()
            self._threads(opened)
            self._closing = opened.pop_all()

    def _threads(self, opened: contextlib.ExitStack) -> None:
        """The attempt's threads, made (started by `_start_streaming`)."""
        pipeline, settings = self.settings.pipeline, self.settings
        self.queue = ChangeQueue(pipeline.queue_max_changes, pipeline.queue_max_bytes)
        # WAITAOF blocks its connection; closed with the threads (`_stop_streaming`).
        self.durable_client = client_for(settings.redis)
        self.durability = Durability(
            self.durable_client,
            settings.redis.wait_aof and aof_enabled(self.client),
            settings.redis.wait_aof_timeout_ms,
            self.stop,
            pipeline.replay_window_s,
            pipeline.replay_window_bytes,
            durable_key(settings.postgres.slot),
        )
        self.reader = Reader(
            self.repl, self.queue, self.stop, self.durability.confirmable,
            pipeline.transaction_piece_rows, self.encoding, pipeline.transaction_piece_bytes,
            kept_columns(self.tables),
        )  # fmt: skip
        self.monitor = Monitor(
            settings, self.client, self.embedder, self.metrics, self._sample, self._set_lag
        )
        self.stager = Stager()
        self.pipeline = Pipeline(
            settings, self.metrics, self.state, self.in_hand, self.applier, self.durability,
            self.stager, self.partitions, self.rebuilds, self.stop,
        )  # fmt: skip

    def __enter__(self) -> Stream:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._closing.close()

    # ----------------------------------------------------------------- the attempt

    def run(self) -> None:
        """Start where the slot and the checkpoint say, stream, and end (raising what failed)."""
        start = Start(
            self.settings, self.embedder, self.state, self.repl, self.applier, self.tables,
            self.partitions,
        ).position()  # fmt: skip
        if start is None:  # rebuilt for another history of the source: start again on it
            return
        self._start_streaming(start)
        try:
            self._apply_loop()
        finally:
            self._stop_streaming()
        for failed in (self.reader.error, self.durability.error):
            if failed is not None:
                raise failed

    def _inspect(self) -> tuple[dict[str, TableInfo], str, str]:
        """The configured tables, the cluster's system id and the database's encoding."""
        with connect(self.settings.postgres, "catalog") as conn:
            encoding = server_codec(conn)  # before reading any text
            tables = {t.qualified_name: inspect_table(conn, t) for t in self.settings.tables}
            system_id = system_identifier(conn)
        check_overlaps(tables)
        for table in tables.values():
            if len(table.settings.content) > 1 and not table.full_identity:
                log.info(
                    "table %s: REPLICA IDENTITY is not FULL, so an UPDATE that leaves a large "
                    "(TOASTed) content column unchanged does not carry its text; the connector "
                    "reads such columns back from the table by key",
                    table.name,
                    extra={"table": table.name},
                )
        return tables, system_id, encoding

    def _start_streaming(self, start: Lsn) -> None:
        self.repl.start(start, self.partitions.filter())
        self.durability.applied(start)
        self.durability.start()
        self.reader.start()
        self.monitor.start()
        with connect(self.settings.postgres, "status") as conn:
            self.state.catch_up_to = current_wal_lsn(conn)
        self.state.streamed = True
        self.state.ready.set()
        self.rebuilds.start(self.tables)  # after the stream started: snapshots follow it

    def _apply_loop(self) -> None:
        """Batches from the queue through the pipeline; between them, now and then, a look at
        the indexes' records (a switch, a rebuild asked for) and at new partitions."""
        queue, stager, pipeline = self.queue, self.stager, self.settings.pipeline
        next_poll = time.monotonic() + _LAYOUT_POLL_S
        next_partitions = 0.0  # at once: partitions new since the last start are copied
        try:
            while not self.stop.is_set() and not self.state.stop.is_set():
                batch = queue.take(self.state.batch_rows, pipeline.batch_max_wait_ms / 1000, 0.25)
                if self.pipeline.apply(batch):
                    self.monitor.activity()
                if not batch and not stager.busy:  # idle: a longer step of garbage collection
                    stager.submit((), lambda: self.pipeline.collect(_GC_IDLE_S))
                if time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + _LAYOUT_POLL_S
                    if self.rebuilds.poll(self.client, self.applier.visible):
                        break  # a switch, or a rebuild asked for: start again with the layouts
                if self.partitions.partitioned and time.monotonic() >= next_partitions:
                    next_partitions = time.monotonic() + _PARTITION_POLL_S
                    self.partitions.poll(self.client, self.rebuilds.targets)
            stager.drain()
        finally:
            stager.close()
        if self.state.stop.is_set() and self.reader.error is None:
            self._shut_down()

    def _shut_down(self) -> None:
        """Confirm what Redis holds durably, then close the stream (SIGTERM / SIGINT), all
        within `pipeline.shutdown_timeout_s`."""
        durability, reader = self.durability, self.reader
        timeout_s = self.settings.pipeline.shutdown_timeout_s
        self._deadline = time.monotonic() + timeout_s
        if not durability.drain(timeout_s / 2):
            log.warning("Redis did not confirm the last write within %.1fs", timeout_s / 2)
        reader.stop.set()
        if self._join(reader):  # the connection is the reader's while it runs
            with contextlib.suppress(Exception):
                reader.repl.confirm(durability.confirmable())
                reader.repl.send_status(force=True)

    def _stop_streaming(self) -> None:
        self.state.ready.clear()
        self.stop.set()
        self.durability.wake()
        self._join(self.reader)
        self._join(self.durability)
        self.durable_client.close()
        self.monitor.close()

    def _join(self, thread: threading.Thread) -> bool:
        """Wait for one of the attempt's threads until the shutdown's deadline (or `_JOIN_S`
        when the attempt ends otherwise); False, said, when it is still running."""
        deadline = self._deadline or time.monotonic() + _JOIN_S
        thread.join(max(0.0, deadline - time.monotonic()))
        if not thread.is_alive():
            return True
        log.warning(
            "thread %s did not stop in time (pipeline.shutdown_timeout_s = %.1fs); leaving it",
            thread.name,
            self.settings.pipeline.shutdown_timeout_s,
        )
        return False

    # ----------------------------------------------------------------- for the monitor

    def _sample(self) -> DaemonSample:
        collector = self.applier.collector
        return DaemonSample(
            self.state.checkpoint,
            self.applier.stats,
            self._oldest_pending(),
            collector.stats if collector is not None else None,
            collector.backlog if collector is not None else 0,
        )

    def _oldest_pending(self) -> float | None:
        """Commit time of the oldest transaction received but not yet applied."""
        in_hand = self.in_hand
        queued = self.queue.oldest_commit_time()
        times = (in_hand.staging_commit, in_hand.planning_commit, queued)
        return min((t for t in times if t is not None), default=None)

    def _set_lag(self, lag_bytes: int) -> None:
        self.state.lag_bytes = lag_bytes


def kept_columns(tables: dict[str, TableInfo]) -> dict[str, frozenset[str]]:
    """The columns each relation's changes keep once decoded: key, content and metadata
    (partitions found later keep all theirs until the applier resolves them)."""
    return {name: frozenset(table.columns) for name, table in routes(tables.values()).items()}

"""Whether each table's changes are indexed or dead-lettered: the applier's watch over them.

One bad row is a dead letter and a WARNING. A table whose changes are *mostly* dead-lettered is
failing (a column renamed or dropped makes every change of it a dead letter): that is said once
per episode, as an ERROR naming the table, the cause and the fix, and `connector status` (the
record in sink.failing) and the metric `connector_table_failing` show it until its changes are
indexed again, or its index is rebuilt. Per-row WARNINGs are a few per table a minute, the rest
summed up once a minute; during an episode only the sums.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field, replace

import redis

from connector.core.plan import BatchWrite
from connector.metrics import Metrics
from connector.sink.failing import Failing, clear_failing, read_failing, record_failing
from connector.sink.writer import IndexWriter

log = logging.getLogger(__name__)

# A table's last WINDOW upserts, indexed or dead-lettered (deletes need none of its columns, so
# they say nothing): at least FAILING_AT of them dead-lettered, and more than half, is failing.
WINDOW = 10
FAILING_AT = 3
# Upserts indexed in a row that end an episode.
RECOVERED_AFTER = 3
# Dead letters logged one by one per table and period; the others are summed up.
ROW_WARNINGS = 3
PERIOD_S = 60.0


@dataclass(slots=True)
class _Watch:
    """One table's recent outcomes (True: dead-lettered) and its episode, if it is failing."""

    recent: deque[bool] = field(default_factory=lambda: deque(maxlen=WINDOW))
    indexed_in_a_row: int = 0
    episode: Failing | None = None
    period_start: float = 0.0
    logged: int = 0  # dead letters logged one by one in this period
    quiet: int = 0  # the others
    last_error: str = ""


class TableHealth:
    """Watches the batches staged for the current indexes (never a rebuild's: it leaves dead
    letters to them). With `slot` (the daemon's) an episode is recorded in Redis for `connector
    status`; without (a copy of `connector resync`) it is only logged."""

    def __init__(self, slot: str | None = None, metrics: Metrics | None = None) -> None:
        self.slot = slot
        self.metrics = metrics
        self._watches: dict[str, _Watch] = {}
        self._physical: dict[str, str] = {}  # table -> the physical index its rows go to

    def follow(self, writer: IndexWriter) -> None:
        """The applier (re)starts with `writer`'s indexes: take up the episodes Redis recorded,
        and end those of tables whose index was rebuilt since (its copy holds them afresh)."""
        recorded = read_failing(writer.client, self.slot) if self.slot else {}
        for spec in writer.specs.values():
            for table in spec.tables:
                if self._physical.get(table, spec.physical_name) != spec.physical_name:
                    self._watches.pop(table, None)  # a switch: what came before says nothing
                self._physical[table] = spec.physical_name
                watch = self._watches.setdefault(table, _Watch())
                episode = watch.episode or recorded.get(table)
                if episode is not None and episode.physical != spec.physical_name:
                    log.info(
                        "table %s: its index %s was rebuilt since it was failing (now %s): "
                        "watching it afresh", table, spec.name, spec.physical_name,
                        extra={"table": table},
                    )  # fmt: skip
                    self._end(writer.client, table, watch)
                elif episode is not None and watch.episode is None:
                    watch.episode = episode
                    log.warning("%s (recorded when the connector last ran)", episode.describe(),
                                extra={"table": table})  # fmt: skip
                self._gauge(table, watch)

    def observe(self, batch: BatchWrite, writer: IndexWriter) -> None:
        """Count a staged batch's outcomes by table: rows indexed, and dead letters."""
        errors: dict[str, list[str]] = {}
        for change, error in batch.letters:
            if change.table in writer.keys:  # the others are another writer's
                errors.setdefault(change.table, []).append(error)
        indexed: dict[str, int] = {}
        for row in batch.rows:
            if not row.state.deleted:
                indexed[row.state.table.name] = indexed.get(row.state.table.name, 0) + 1
        now = time.time()
        for table in sorted({*errors, *indexed}):
            self._observe(writer, table, indexed.get(table, 0), errors.get(table, []), now)

    def _observe(
        self, writer: IndexWriter, table: str, indexed: int, errors: list[str], now: float
    ) -> None:
        watch = self._watches.setdefault(table, _Watch())
        watch.recent.extend([False] * min(indexed, WINDOW))
        watch.recent.extend([True] * min(len(errors), WINDOW))
        if errors:
            watch.last_error = errors[-1]
            watch.indexed_in_a_row = 0
        else:
            watch.indexed_in_a_row += indexed
        self._log_rows(table, watch, errors, now)
        dead = sum(watch.recent)
        if watch.episode is None and dead >= FAILING_AT and 2 * dead > len(watch.recent):
            self._start(writer, table, watch, dead, now)
        elif watch.episode is not None and errors:
            count = watch.episode.dead_letters + len(errors)
            watch.episode = replace(watch.episode, cause=watch.last_error, dead_letters=count)
            self._record(writer.client, watch.episode)
        elif watch.episode is not None and watch.indexed_in_a_row >= RECOVERED_AFTER:
            log.warning(
                "table %s recovered: its changes are indexed again. %d were dead-lettered since "
                "%s (%s keeps them); their rows come back with a rebuild's copy or `connector "
                "resync --table %s`", table, watch.episode.dead_letters,
                time.strftime("%H:%M:%S", time.localtime(watch.episode.since)),
                watch.episode.stream, table, extra={"table": table},
            )  # fmt: skip
            self._end(writer.client, table, watch)

    def _log_rows(self, table: str, watch: _Watch, errors: list[str], now: float) -> None:
        """Dead letters one by one, a few a period and none during an episode; then sums."""
        if now - watch.period_start >= PERIOD_S:
            if watch.quiet:
                log.warning(
                    "%d more rows of %s were dead-lettered in the last %.0fs (the newest: %s)",
                    watch.quiet, table, now - watch.period_start, watch.last_error,
                    extra={"table": table},
                )  # fmt: skip
            watch.period_start, watch.logged, watch.quiet = now, 0, 0
        for error in errors:
            if watch.episode is None and watch.logged < ROW_WARNINGS:
                watch.logged += 1
                log.warning("dead-lettered a row of %s: %s", table, error, extra={"table": table})
            else:
                watch.quiet += 1

    def _start(self, writer: IndexWriter, table: str, watch: _Watch, dead: int, now: float) -> None:
        spec = next(s for s in writer.specs.values() if table in s.tables)
        fix = (
            "as the cause says; the rows whose changes were dead-lettered come back with the "
            f"copy of a rebuild (`connector reindex`) or of `connector resync --table {table}` "
            f"({spec.deadletter} keeps them)"
        )
        watch.episode = Failing(table, spec.name, spec.physical_name, now, watch.last_error,
                                fix, dead, spec.deadletter)  # fmt: skip
        log.error(
            "table %s is failing: %d of its last %d changes were dead-lettered, and its changes "
            "go on being dead-lettered until it is fixed. Cause: %s. Fix: %s",
            table, dead, len(watch.recent), watch.last_error, fix, extra={"table": table},
        )  # fmt: skip
        self._record(writer.client, watch.episode)
        self._gauge(table, watch)

    def _end(self, client: redis.Redis, table: str, watch: _Watch) -> None:
        watch.episode = None
        watch.recent.clear()
        self._gauge(table, watch)
        if self.slot is None:
            return
        try:
            clear_failing(client, self.slot, table)
        except redis.RedisError as exc:  # the next start ends it again
            log.debug("recording that table %s recovered: %s", table, exc)

    def _record(self, client: redis.Redis, episode: Failing) -> None:
        if self.slot is None:
            return
        try:
            record_failing(client, self.slot, episode)
        except redis.RedisError as exc:  # status shows it at the next batch; never stop for it
            log.debug("recording that table %s is failing: %s", episode.table, exc)

    def _gauge(self, table: str, watch: _Watch) -> None:
        if self.metrics is not None:
            self.metrics.set_table_failing(table, watch.episode is not None)

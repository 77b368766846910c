"""Rebuilds behind an alias, inside the daemon (sink.layout holds their Redis side).

While an index is rebuilt, the daemon streams every change into both its physical indexes
(flow.targets) and a copier thread copies the tables from a fresh consistent snapshot into the
new one; the snapshot is taken after the daemon started writing both, so the copy and the stream
together miss nothing. Once readers are past the copy's LSN the alias switches in one step; the
old index and its keys are dropped afterwards in bounded steps, after the grace period.

The same copy back-fills the rows of a table whose index gained a metadata column in place.

A failure or a SIGKILL leaves the record as it was and the old index serving: the next start
copies again from a new snapshot (rows already copied keep their chunks and vectors; only their
versions are written again).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import redis

from connector.config import Settings, TableSettings
from connector.core.lsn import Lsn
from connector.core.tables import TableInfo
from connector.embed.base import Embedder
from connector.errors import ConfigError
from connector.flow.applier import Applier
from connector.flow.copy import CopyOptions, copy_at_new_snapshot
from connector.flow.targets import Layout, Target, prepare
from connector.logs import redact
from connector.sink.layout import (
    Owner,
    Record,
    abandon_building,
    begin_rebuild,
    end_backfill,
    mark_copied,
    read_record,
    record_progress,
    retire_step,
    set_owner,
    switch,
)
from connector.sink.redis_client import client_for

log = logging.getLogger(__name__)

_REPORT_EVERY_S = 0.5


class Copier(threading.Thread):
    """Copies tables from a fresh snapshot into one target: a rebuild's new index, or the
    current one for a back-fill."""

    def __init__(
        self,
        settings: Settings,
        alias: str,
        target: Target,
        tables: list[TableInfo],
        rebuild: bool,
        stop: threading.Event,
    ) -> None:
        super().__init__(name=f"connector-{'rebuild' if rebuild else 'backfill'}-{alias}",
                         daemon=True)  # fmt: skip
        self.settings = settings
        self.alias = alias
        self.target = target
        self.tables = tables
        self.rebuild = rebuild
        self.stop = stop
        self.error: BaseException | None = None

    def run(self) -> None:
        client = client_for(self.settings.redis)
        try:
            applier = Applier(client, self.settings, self.target.embedder, targets=[self.target])
            applier.pace(self.settings.reindex.copy_share)
            purpose = "rebuild" if self.rebuild else "backfill"
            report = progress_of(client, self.alias) if self.rebuild else None
            copying = CopyOptions(self.stop, report)
            at, rows = copy_at_new_snapshot(self.settings, applier, self.tables, purpose, copying)
            if self.rebuild:
                mark_copied(client, self.alias, at)
            else:
                end_backfill(client, self.alias, [t.name for t in self.tables])
            log.info("index %s: %s copied %d rows as of %s (%d chunks embedded)", self.alias,
                     purpose, rows, at, applier.stats.chunks_embedded)  # fmt: skip
        except Exception as exc:  # the daemon restarts from its checkpoint, and copies again
            if not self.stop.is_set():
                self.error = exc
                log.error("index %s: the copy failed: %s", self.alias, redact(str(exc)))
        finally:
            client.close()


class Rebuilds:
    """The daemon's rebuilds and back-fills, for the layouts it started with."""

    def __init__(self, settings: Settings, layouts: dict[str, Layout], found: list[Target]) -> None:
        self.settings = settings
        self.layouts = layouts
        self._targets = found
        self._stop = threading.Event()
        self._copiers: list[Copier] = []
        self._retiring = {a: lay.record for a, lay in layouts.items() if lay.record.retiring}

    @property
    def targets(self) -> list[Target]:
        """Every target the daemon writes (the current indexes, and the rebuilds' new ones)."""
        return self._targets

    def start(self, tables: dict[str, TableInfo]) -> None:
        """Start the copies the layouts call for (the daemon already writes every target)."""
        for alias, layout in self.layouts.items():
            if layout.building is not None and layout.record.phase == "copying":
                target = next(t for t in self._targets if t.rebuild and alias in t.specs)
                infos = [_bound(tables, t.qualified_name, t) for t in layout.building.tables]
                self._copy(alias, target, infos, rebuild=True)
            if layout.record.backfill:
                target = next(t for t in self._targets if not t.rebuild and alias in t.specs)
                names = set(layout.record.backfill)
                infos = [_bound(tables, t.qualified_name, t) for t in layout.current.tables
                         if t.qualified_name in names]  # fmt: skip
                self._copy(alias, target, infos, rebuild=False)

    def _copy(self, alias: str, target: Target, infos: list[TableInfo], rebuild: bool) -> None:
        copier = Copier(self.settings, alias, target, infos, rebuild, self._stop)
        copier.start()
        self._copiers.append(copier)

    def poll(self, client: redis.Redis, visible: Lsn) -> bool:
        """Switch the rebuilds whose copy readers are past. True when the layouts changed
        (a switch, or a rebuild asked for or cancelled by `connector reindex`): the daemon
        starts again with the new ones."""
        for copier in self._copiers:
            if copier.error is not None:
                raise copier.error
        changed = False
        for alias, layout in self.layouts.items():
            record = read_record(client, alias)
            if record is None:
                continue
            if record.phase == "copied" and record.at is not None and visible >= record.at:
                switch(client, record)
                changed = True
            elif _moved(layout.record, record):
                log.info("index %s: its layout changed (connector reindex): starting again", alias)
                changed = True
        return changed

    def retire(self, client: redis.Redis) -> None:
        """A bounded step of dropping the indexes before the last switches."""
        grace = self.settings.pipeline.gc_grace_s
        budget = self.settings.reindex.drop_step_keys
        for alias, record in list(self._retiring.items()):
            if not retire_step(client, record, grace, budget):
                del self._retiring[alias]

    def close(self) -> None:
        self._stop.set()
        for copier in self._copiers:
            copier.join(10)


def rebuild_every_index(
    client: redis.Redis, settings: Settings, embedder: Embedder, owner: Owner, reason: str
) -> dict[str, Layout]:
    """Begin a rebuild of every index of the settings into a new physical index (the source
    has another history: nothing the indexes hold can be kept), built with what a rebuild under
    way was to be built with, else with what the current index was. A rebuild under way is
    abandoned; an index still retiring from an earlier switch is dropped now (the switch ahead
    would lose track of it). Their copy and switch are the caller's."""
    layouts = {}
    for alias, layout in prepare(client, settings, embedder, False, reconcile=False).items():
        record = layout.record
        built = layout.building or layout.current
        if record.building is not None:
            abandon_building(client, record)
        while retire_step(client, record, 0.0, settings.reindex.drop_step_keys):
            pass
        record = begin_rebuild(client, read_record(client, alias) or record, built, reason)
        assert record.building is not None
        set_owner(client, record.building, owner)
        layouts[alias] = Layout(record, layout.current, built)
    return layouts


def progress_of(client: redis.Redis, alias: str) -> Callable[[int, int], None]:
    """Records a rebuild's copy progress in the alias's record (for `status` and `connector
    reindex`), every `_REPORT_EVERY_S` and at the end."""
    reported = 0.0

    def report(done: int, total: int) -> None:
        nonlocal reported
        now = time.monotonic()
        if now - reported >= _REPORT_EVERY_S or done >= total:
            reported = now
            record_progress(client, alias, done, total)

    return report


def bound_tables(tables: dict[str, TableInfo], target: Target) -> list[TableInfo]:
    """The database's tables read with `target`'s settings of them."""
    return [_bound(tables, t.qualified_name, t) for t in target.tables]


def _moved(before: Record, now: Record) -> bool:
    return (
        before.current != now.current
        or before.building != now.building
        or before.generation != now.generation
    )


def _bound(tables: dict[str, TableInfo], name: str, settings: TableSettings) -> TableInfo:
    """The database's table read with a layout's settings of it."""
    if name not in tables:
        raise ConfigError(
            f"table {name} is in a rebuild of its index but not in these settings: add its "
            "[[tables]] section, or cancel the rebuild (`connector reindex --cancel`)"
        )
    return replace(tables[name], settings=settings)

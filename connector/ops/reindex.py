"""`connector reindex`: rebuild an index behind its alias while the connector streams, or make
a change that needs no rebuild (metadata columns added or removed) in place.

It prints the plan first: what changes, the rows to copy, whether vectors are reused (the model
is the same) or embedded again, and the memory the new index needs while both exist (refused
when Redis's maxmemory has no room for it, unless `--force`); `--dry-run` stops there. Then it
records the rebuild; the daemon does the work (flow.rebuild), and this command follows the
progress the daemon records (a progress bar on a terminal, plain lines otherwise) until the alias
switches.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import TextIO

import redis

from connector.config import Settings
from connector.core.vectors import width
from connector.embed.base import Embedder
from connector.errors import ConfigError
from connector.ops.resync import select_tables
from connector.progress import Progress
from connector.sink.layout import (
    Built,
    Change,
    Physical,
    Record,
    abandon_building,
    alter,
    begin_rebuild,
    built_from_settings,
    check_owner,
    compare,
    physical_name,
    read_built,
    read_record,
)
from connector.sink.memory import RebuildEstimate, estimate_rebuild
from connector.sink.redis_client import client_for
from connector.source.catalog import inspect_table
from connector.source.connection import connect
from connector.source.slots import slot_info
from connector.source.snapshot import count_rows

log = logging.getLogger(__name__)

_WATCH_PAUSE_S = 0.2


@dataclass(frozen=True, slots=True)
class ReindexPlan:
    """What `connector reindex` would do to one index."""

    alias: str
    record: Record
    built: Built
    want: Built
    change: Change
    rows: int
    estimate: RebuildEstimate | None  # None: no rebuild (the change is made in place)
    next_name: str = ""  # the physical index a rebuild makes

    @property
    def rebuild(self) -> bool:
        return self.estimate is not None

    @property
    def reuses_vectors(self) -> bool:
        return self.built.model_id == self.want.model_id

    def describe(self) -> str:
        current = self.record.current
        if not self.rebuild:
            added = ", ".join(f"{c} ({k})" for c, k in self.change.added.items()) or "none"
            return (
                f"index {self.alias}: no rebuild needed; in place on {current.name}: metadata "
                f"fields added {added}, rows back-filled from Postgres in "
                f"{', '.join(self.change.backfill) or 'no table'}"
            )
        why = "; ".join(self.change.rebuild) or "asked for (the settings are unchanged)"
        vectors = (
            f"reused from {current.name} (same model): no embedding"
            if self.reuses_vectors
            else f"embedded again with {self.want.describe_model()}"
        )
        assert self.estimate is not None
        return "\n".join(
            [
                f"index {self.alias}: rebuild {current.name} -> {self.next_name} ({why})",
                f"  rows to copy: {self.rows}; vectors {vectors}",
                f"  memory: {self.estimate.describe()}",
                "  searches answer from the current index until the switch (one step); the old "
                "index is dropped after it",
            ]
        )


def plan_reindex(settings: Settings, model: Embedder, only: list[str] | None) -> list[ReindexPlan]:
    """The plan for the indexes of the chosen tables (default: every index)."""
    chosen = set(select_tables(settings, only))
    plans = []
    with (
        client_for(settings.redis) as client,
        connect(settings.postgres, "reindex") as conn,
    ):
        for alias, want in built_from_settings(settings, model).items():
            if not chosen & {t.qualified_name for t in want.tables}:
                continue
            record = read_record(client, alias)  # a plan changes nothing: no alias is made here
            if record is None:
                raise ConfigError(
                    f"index {alias} has not been built yet (no alias record): `connector run` "
                    "builds it with these settings; there is nothing to rebuild"
                )
            check_owner(client, record, settings.postgres.slot)
            built = read_built(client, record.current, want.tables) or want
            change = compare(built, want)
            rows = sum(count_rows(conn, inspect_table(conn, t)) for t in want.tables)
            estimate = None
            if change.rebuild or not change.rewrite:
                ratio = (want.dimensions * width(want.vector.type)) / (
                    built.dimensions * width(built.vector.type)
                )
                estimate = estimate_rebuild(client, record.current, ratio)
            next_name = physical_name(client, alias, record.serial + 1)
            plans.append(ReindexPlan(alias, record, built, want, change, rows, estimate, next_name))
    return plans


@dataclass(frozen=True, slots=True)
class ReindexOptions:
    """What `connector reindex` is asked besides the tables: print the plan only (`dry_run`),
    drop a rebuild under way (`cancel`), rebuild even if memory looks short (`force`), follow
    the rebuild until the switch (`wait`)."""

    dry_run: bool = False
    cancel: bool = False
    force: bool = False
    wait: bool = True


def reindex(
    settings: Settings,
    embedder: Embedder,
    only: list[str] | None = None,
    options: ReindexOptions | None = None,
    stream: TextIO | None = None,
) -> int:
    """Rebuild (or change in place) the chosen indexes; returns the exit status."""
    asked = options or ReindexOptions()
    out = stream or sys.stdout
    plans = plan_reindex(settings, embedder, only)
    for plan in plans:
        print(plan.describe(), file=out)
    if asked.dry_run:
        return 0
    with client_for(settings.redis) as client:
        if asked.cancel:
            for plan in plans:
                record = read_record(client, plan.alias)
                if record is not None and record.building is not None:
                    abandon_building(client, record)
                    print(f"index {plan.alias}: rebuild into {record.building.name} cancelled",
                          file=out)  # fmt: skip
            return 0
        started = [_start(client, plan, asked.force, out) for plan in plans]
        if not asked.wait or not any(started):
            return 0
        if not _streaming(settings):
            print(
                f"no connector is streaming slot {settings.postgres.slot}: the rebuild runs "
                "when `connector run` starts (it writes both indexes while it copies)",
                file=out,
            )
            return 0
        status = 0
        for plan, building in zip(plans, started, strict=True):
            if building is not None:
                status |= _watch_rebuild(settings, client, plan.alias, building, out)
        return status


def _start(client: redis.Redis, plan: ReindexPlan, force: bool, out: TextIO) -> Physical | None:
    """Record the rebuild (or make the change in place); the physical index being built."""
    record = read_record(client, plan.alias) or plan.record
    if not plan.rebuild:
        alter(client, record, plan.built, plan.want, plan.change)
        print(f"index {plan.alias}: changed in place (a running connector back-fills the rows)",
              file=out)  # fmt: skip
        return None
    if record.building is not None:
        building = read_built(client, record.building)
        if building is not None and not compare(building, plan.want).rebuild:
            print(f"index {plan.alias}: a rebuild into {record.building.name} is already under "
                  "way: following it", file=out)  # fmt: skip
            return record.building
        abandon_building(client, record)
        record = read_record(client, plan.alias) or record
    assert plan.estimate is not None
    if not plan.estimate.fits and not force:
        raise ConfigError(
            f"index {plan.alias}: the rebuild needs {plan.estimate.describe()}, more than Redis "
            "has room for: raise maxmemory, or drop what you do not need, or pass --force"
        )
    why = "; ".join(plan.change.rebuild) or "asked for (connector reindex)"
    record = begin_rebuild(client, record, plan.want, why)
    assert record.building is not None
    return record.building


def _streaming(settings: Settings) -> bool:
    with connect(settings.postgres, "reindex") as conn:
        info = slot_info(conn, settings.postgres.slot)
    return info is not None and info.active


def _watch_rebuild(
    settings: Settings, client: redis.Redis, alias: str, building: Physical, out: TextIO
) -> int:
    """Show the rebuild's progress until the alias switches to `building` (0), or the rebuild
    is abandoned (1). Leaving early (Ctrl-C) leaves the rebuild running in the connector."""
    shown = _Shown(alias, building, out)
    next_slot_check = time.monotonic() + 2.0
    while True:
        record = read_record(client, alias)
        outcome = _outcome(alias, record, building)
        if outcome is not None:
            shown.finish()
            print(outcome[1], file=out)
            return outcome[0]
        assert record is not None
        shown.update(record)
        if time.monotonic() >= next_slot_check:
            next_slot_check = time.monotonic() + 2.0
            if not _streaming(settings):
                print(f"\nthe connector stopped streaming slot {settings.postgres.slot}: the "
                      "rebuild goes on when `connector run` starts again", file=out)  # fmt: skip
                return 0
        time.sleep(_WATCH_PAUSE_S)


def _outcome(alias: str, record: Record | None, building: Physical) -> tuple[int, str] | None:
    if record is None:
        return 1, f"index {alias}: its record is gone (FLUSHALL?)"
    if record.current == building:
        return 0, f"index {alias} now answers from {building.name}"
    if record.building != building:
        return 1, f"index {alias}: the rebuild into {building.name} was abandoned"
    return None


class _Shown:
    """The rebuild's progress as the daemon records it: a bar on a terminal, lines else."""

    def __init__(self, alias: str, building: Physical, out: TextIO) -> None:
        self.what = f"rebuild of {alias} into {building.name}"
        self.out = out
        self.progress: Progress | None = None
        self.copied = False

    def update(self, record: Record) -> None:
        if record.rows_total and self.progress is None:  # rows done before: not in the rate
            self.progress = Progress(self.what, record.rows_total, self.out, done=record.rows_done)
        if self.progress is not None:  # 0 rows more: the bar's clock moves on
            self.progress.advance(max(record.rows_done - self.progress.done, 0))
        if record.phase == "copied" and not self.copied:
            self.copied = True
            after_bar = "\n" if self.progress is not None and self.progress.tty else ""
            print(f"{after_bar}{self.what}: copied as of {record.at}; switching when the "
                  "connector is past it", file=self.out)  # fmt: skip

    def finish(self) -> None:
        if self.progress is not None:
            self.progress.advance(self.progress.total - self.progress.done)
            self.progress.finish()

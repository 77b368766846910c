"""What the connector writes to: each index's current physical index and, while a rebuild runs,
the one it builds (sink.layout), grouped into targets that share a model.

At start the daemon compares each index with its settings (`prepare`): metadata columns added or
removed are changed in place; any other difference needs a rebuild, which starts at once when
`reindex.auto` is on (else the daemon refuses to start and names `connector reindex`). While a
rebuild runs, every change is written to both indexes: the current one with what it was built
with, the new one with the settings it is built with (its own model, chunking and vector type).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import redis

from connector.config import Settings, TableSettings
from connector.embed import make_embedder
from connector.embed.base import Embedder
from connector.errors import ConfigError
from connector.sink.checkpoint import forget_checkpoint
from connector.sink.layout import (
    Built,
    Owner,
    Record,
    abandon_building,
    alter,
    begin_rebuild,
    built_from_settings,
    compare,
    open_alias,
    read_built,
    read_record,
)
from connector.sink.schema import IndexSpec, Model

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Layout:
    """One index name: its record, what its current index holds, what a rebuild builds."""

    record: Record
    current: Built
    building: Built | None = None

    def current_spec(self) -> IndexSpec:
        return self.current.spec(self.record.alias, self.record.current)

    def building_spec(self) -> IndexSpec | None:
        if self.building is None or self.record.building is None:
            return None
        return self.building.spec(self.record.alias, self.record.building)


@dataclass(slots=True)
class Target:
    """Physical indexes written together with one model (`embedder`'s): the current ones of
    that model, or a rebuild's new index (`rebuild`). `tables` are its tables' settings as these
    indexes are built (a current index a rebuild replaces keeps those it was built with). A
    rebuild that keeps the model takes its vectors from the index it replaces (`donor`)."""

    specs: dict[str, IndexSpec]
    tables: list[TableSettings]
    embedder: Embedder
    rebuild: bool = False
    donor: dict[str, IndexSpec] = field(default_factory=dict)


def _model_of(model: Model) -> tuple[str, str, int]:
    return (model.provider, model.model, model.dimensions)


def prepare(
    client: redis.Redis,
    settings: Settings,
    embedder: Embedder,
    auto: bool,
    reconcile: bool = True,
    system_id: str = "",
) -> dict[str, Layout]:
    """Open every configured index, make the changes that need no rebuild, and start (or go on
    with) the rebuilds the settings need. Without `reconcile` the layouts Redis records are
    taken as they are (the daemon starting again after a switch `connector reindex` made with
    settings it was not started with). An index another slot writes is refused; the others
    record this slot (and `system_id`, the source database's) as their owner."""
    layouts = {}
    dropped = False
    owner = Owner(settings.postgres.slot, system_id)
    for alias, want in built_from_settings(settings, embedder).items():
        record, was_dropped = open_alias(client, alias, want, owner)
        dropped = dropped or was_dropped
        layouts[alias] = (
            _reconcile(client, record, want, auto) if reconcile else _read(client, record, want)
        )
    if dropped:  # the daemon copies the tables again
        forget_checkpoint(client, settings.postgres.slot)
    return layouts


def _read(client: redis.Redis, record: Record, want: Built) -> Layout:
    """The index as Redis records it (`want`'s tables where an earlier connector did not)."""
    current = read_built(client, record.current, want.tables) or want
    building = read_built(client, record.building) if record.building else None
    return Layout(record, current, building)


def _reconcile(client: redis.Redis, record: Record, want: Built, auto: bool) -> Layout:
    found = _read(client, record, want)
    current, building = found.current, found.building
    change = compare(current, want)
    if not change.rebuild:
        if change.rewrite:
            current = alter(client, record, current, want, change)
            record = read_record(client, record.alias) or record
        return Layout(record, current, building)  # a rebuild asked for by `connector reindex`
    if building is not None and not compare(building, want).rebuild:
        return Layout(record, current, building)  # one already under way
    why = "; ".join(change.rebuild)
    if not auto:
        raise ConfigError(
            f"index {record.alias} was built with other settings than these ({why}): run "
            f"`connector reindex --table {want.tables[0].qualified_name}` to rebuild it behind "
            "its alias while the connector runs (searches keep answering), or set "
            "[reindex] auto = true to rebuild it when the connector starts, or set the settings "
            "back"
        )
    if building is not None:
        abandon_building(client, record)
    record = begin_rebuild(client, read_record(client, record.alias) or record, want, why)
    return Layout(record, current, want)


def targets(
    layouts: dict[str, Layout],
    settings: Settings,
    embedder: Embedder,
    cache: redis.Redis | None = None,
    rebuilds: bool = True,
) -> list[Target]:
    """The targets of `layouts`: the current indexes grouped by model (the configured model's
    first), then each rebuild's new index. `embedder` embeds for the configured model; another
    model gets its own (same provider settings, that model)."""
    embedders: dict[tuple[str, str, int], Embedder] = {_model_of(embedder): embedder}

    def embedder_for(built: Built) -> Embedder:
        if built.model_id not in embedders:
            embedding = settings.embedding.model_copy(
                update={"provider": built.provider, "model": built.model,
                        "dimensions": built.dimensions}
            )  # fmt: skip
            embedders[built.model_id] = make_embedder(embedding, cache)
        return embedders[built.model_id]

    groups: dict[tuple[str, str, int], Target] = {}
    for alias, layout in layouts.items():
        group = groups.get(layout.current.model_id)
        if group is None:
            group = groups[layout.current.model_id] = Target({}, [], embedder_for(layout.current))
        group.specs[alias] = layout.current_spec()
        group.tables += layout.current.tables
    found = sorted(groups.values(), key=lambda t: _model_of(t.embedder) != _model_of(embedder))
    for alias, layout in layouts.items():
        spec = layout.building_spec()
        if not rebuilds or spec is None or layout.building is None:
            continue
        donor = {alias: layout.current_spec()}
        same = layout.building.model_id == layout.current.model_id
        made = embedder_for(layout.building)
        found.append(Target({alias: spec}, list(layout.building.tables), made, True,
                            donor if same else {}))  # fmt: skip
    return found


def close_extra(found: list[Target], embedder: Embedder) -> None:
    """Close the embedders `targets` made (not the configured one)."""
    extra = {id(t.embedder): t.embedder for t in found if t.embedder is not embedder}
    for made in extra.values():
        made.close()

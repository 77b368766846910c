"""What a physical index was built with (`Built`, kept in its meta), what the settings ask for
(`built_from_settings`), and what getting from one to the other takes (`compare`): metadata
columns added or removed are changed in place; anything else needs a rebuild."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import redis

from connector.config import Settings, TableSettings, VectorSettings
from connector.sink.layout.records import Physical, info_pairs, read_record
from connector.sink.redis_client import Fields, command, text
from connector.sink.schema import (
    RESERVED_FIELDS,
    IndexSpec,
    Model,
    describe_vector,
    embedding_meta,
    index_specs,
    schema_args,
)

log = logging.getLogger(__name__)

_FIELD_KINDS = {"TAG": "tag", "NUMERIC": "numeric", "TEXT": "text"}


@dataclass(frozen=True, slots=True)
class Built:
    """What a physical index was built with (or is to be built with)."""

    provider: str
    model: str
    dimensions: int
    tables: tuple[TableSettings, ...]
    fields: dict[str, str]  # the schema's metadata fields (a removed column stays until a rebuild)

    @property
    def vector(self) -> VectorSettings:
        return self.tables[0].vector

    @property
    def model_id(self) -> tuple[str, str, int]:
        return (self.provider, self.model, self.dimensions)

    def describe_model(self) -> str:
        return f"{self.provider}/{self.model} ({self.dimensions} dimensions)"

    def spec(self, alias: str, physical: Physical) -> IndexSpec:
        names = tuple(t.qualified_name for t in self.tables)
        return IndexSpec(
            alias, dict(self.fields), names, self.vector, physical.name, physical.prefix
        )

    def meta(self) -> Fields:
        fields: Fields = {}
        fields.update(embedding_meta(self, self.vector))
        fields["tables"] = json.dumps([t.model_dump(mode="json") for t in self.tables])
        fields["fields"] = json.dumps(self.fields)
        return fields


@dataclass(frozen=True, slots=True)
class Change:
    """How an index differs from the settings."""

    rebuild: list[str] = field(default_factory=list)  # why it needs a rebuild ([]: it does not)
    added: dict[str, str] = field(default_factory=dict)  # metadata fields FT.ALTER adds
    backfill: list[str] = field(default_factory=list)  # tables whose rows need those columns
    rewrite: bool = False  # the recorded metadata changes (columns added or removed)


def built_from_settings(settings: Settings, model: Model) -> dict[str, Built]:
    """What each index of the settings is to be built with, by index name."""
    specs = index_specs(settings.tables)  # refuses tables that disagree on an index
    built = {}
    for name, spec in specs.items():
        tables = tuple(t for t in settings.tables if t.index_name == name)
        built[name] = Built(model.provider, model.model, model.dimensions, tables, spec.fields)
    return built


def compare(built: Built, want: Built) -> Change:
    """What changing `built` into `want` takes (pure)."""
    reasons = []
    if built.model_id != want.model_id:
        reasons.append(f"model {built.describe_model()} -> {want.describe_model()}")
    if describe_vector(built.vector) != describe_vector(want.vector):
        reasons.append(
            f"vector {describe_vector(built.vector)!r} -> {describe_vector(want.vector)!r}"
        )
    before = {t.qualified_name: t for t in built.tables}
    after = {t.qualified_name: t for t in want.tables}
    if after.keys() - before.keys():
        reasons.append(f"tables added: {', '.join(sorted(after.keys() - before.keys()))}")
    if before.keys() - after.keys():
        reasons.append(f"tables removed: {', '.join(sorted(before.keys() - after.keys()))}")
    added: dict[str, str] = {}
    backfill: list[str] = []
    rewrite = False
    for name in sorted(after.keys() & before.keys()):
        old, new = before[name], after[name]
        reasons += _table_differences(old, new)
        for column, kind in new.metadata.items():
            if built.fields.get(column, kind) != kind:
                reasons.append(f"metadata field {column}: {built.fields[column]} -> {kind}")
            elif column not in old.metadata:
                if column not in built.fields:
                    added[column] = kind
                backfill.append(name)
        rewrite = rewrite or old.metadata != new.metadata
    return Change(reasons, added, sorted(set(backfill)), rewrite)


def _table_differences(old: TableSettings, new: TableSettings) -> list[str]:
    skip = {"metadata", "vector"}
    before, after = old.model_dump(exclude=skip), new.model_dump(exclude=skip)
    return [
        f"table {new.qualified_name}: {name} {before[name]!r} -> {after[name]!r}"
        for name in after
        if before.get(name) != after[name]
    ]


def read_built(
    client: redis.Redis, physical: Physical, configured: Sequence[TableSettings] = ()
) -> Built | None:
    """What `physical` was built with (None: no meta). An index of a connector that did not
    record its tables is taken to hold `configured`, with the metadata its schema has."""
    meta = {text(k): text(v) for k, v in client.hgetall(f"{physical.prefix}:meta").items()}
    if not meta.get("model"):
        return None
    if "tables" in meta:
        tables = tuple(TableSettings.model_validate(t) for t in json.loads(meta["tables"]))
        fields = dict(json.loads(meta.get("fields", "{}")))
    elif not configured:
        return None
    else:
        fields = schema_fields(client, physical.name)
        vector = _recorded_vector(meta)
        tables = tuple(
            t.model_copy(
                update={
                    "vector": vector,
                    "metadata": {c: k for c, k in t.metadata.items() if fields.get(c) == k},
                }
            )
            for t in configured
        )
    return Built(meta["provider"], meta["model"], int(meta["dimensions"]), tables, fields)


def _recorded_vector(meta: Mapping[str, str]) -> VectorSettings:
    """The vector options a meta of an earlier connector records (`describe_vector`'s text)."""
    words = meta.get("vector", describe_vector(VectorSettings())).split()
    options: dict[str, Any] = {"algorithm": words[0], "type": words[1], "distance": words[2]}
    for word in words[3:]:
        name, _, value = word.partition("=")
        options[name] = float(value) if name == "epsilon" else int(value)
    return VectorSettings.model_validate(options)


def schema_fields(client: redis.Redis, index: str) -> dict[str, str]:
    """The metadata fields of an index's schema (FT.INFO), by name."""
    info = command(client, "FT.INFO", index)
    fields = {}
    for attribute in info.get(b"attributes", []):
        entry = info_pairs(attribute)
        name, kind = text(entry.get("identifier")), text(entry.get("type"))
        if name not in RESERVED_FIELDS and name != "embedding" and kind in _FIELD_KINDS:
            fields[name] = _FIELD_KINDS[kind]
    return fields


def current_specs(client: redis.Redis, settings: Settings) -> dict[str, IndexSpec]:
    """Each configured index's spec as its current physical index has it (the settings' spec
    under the name itself before the connector first ran)."""
    specs = index_specs(settings.tables)
    for name, spec in specs.items():
        record = read_record(client, name)
        if record is None:
            continue
        built = read_built(
            client, record.current, tuple(t for t in settings.tables if t.index_name == name)
        )
        specs[name] = (
            built.spec(name, record.current)
            if built
            else replace(spec, physical=record.current.name, prefix=record.current.prefix)
        )
    return specs


def create_physical(client: redis.Redis, physical: Physical, built: Built) -> None:
    """Create a physical index (its keys under its prefix) and record what it is built with."""
    spec = built.spec(physical.name, physical)
    command(client, *schema_args(spec, built.dimensions))
    client.hset(f"{physical.prefix}:meta", mapping=built.meta())
    log.info("created index %s (keys under %s:, %s, %s)", physical.name, physical.prefix,
             built.describe_model(), describe_vector(built.vector))  # fmt: skip

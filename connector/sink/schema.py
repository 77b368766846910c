"""The RediSearch index of each index name, and the record of the model it was built with.

Tables that share an index name share its metadata fields; a field kind that differs between
two of them, or a metadata column named like a field the connector writes, is refused here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis

from connector.config import TableSettings, VectorSettings
from connector.core.chunking import TRUNCATED_FIELD
from connector.core.engine import integer_vectors
from connector.core.fulltext import ORIGINAL_FIELD
from connector.core.keys import Keyspace, deadletter_key
from connector.core.pgtypes import TAG_SEPARATOR
from connector.errors import ConfigError, ModelMismatchError, RedisIndexError
from connector.sink.engine import read_profile
from connector.sink.redis_client import text

log = logging.getLogger(__name__)

# 3: row versions (chunk ids `<text hash>@<lsn>`, manifests of versions, a visible LSN, floors
# as hashes). An index of an older schema is rebuilt by a resync, never read.
SCHEMA_VERSION = "3"
RESERVED_FIELDS = frozenset(
    {"content", ORIGINAL_FIELD, "embedding", "table", "pk", "chunk", "lsn", TRUNCATED_FIELD}
)
_FIELD_ARGS = {
    "tag": ["TAG", "SEPARATOR", TAG_SEPARATOR, "CASESENSITIVE"],
    "numeric": ["NUMERIC"],
    "text": ["TEXT"],
}


class Model(Protocol):
    """What the index records of the embedding model (an `Embedder` has it)."""

    @property
    def provider(self) -> str: ...

    @property
    def model(self) -> str: ...

    @property
    def dimensions(self) -> int: ...


@dataclass(frozen=True, slots=True)
class IndexSpec:
    """One RediSearch index and the tables written under its prefix."""

    name: str  # the index name queries use: an alias of the physical index (sink.layout)
    fields: dict[str, str]  # metadata field -> tag | numeric | text
    tables: tuple[str, ...]
    vector: VectorSettings = field(default_factory=VectorSettings)
    physical: str | None = None  # the physical index behind the alias (default: the name)
    prefix: str | None = None  # the key prefix of the physical index (default: the name)

    @property
    def physical_name(self) -> str:
        return self.physical or self.name

    @property
    def keys(self) -> Keyspace:
        return Keyspace(self.prefix or self.name)

    @property
    def deadletter(self) -> str:
        """Its dead-letter stream: by the index name, so it outlives each physical index."""
        return deadletter_key(self.name)


def index_specs(tables: Iterable[TableSettings]) -> dict[str, IndexSpec]:
    """Group tables by index name; tables sharing an index share its metadata fields and its
    vector field."""
    fields: dict[str, dict[str, str]] = {}
    members: dict[str, list[str]] = {}
    vectors: dict[str, VectorSettings] = {}
    for table in tables:
        merged = fields.setdefault(table.index_name, {})
        members.setdefault(table.index_name, []).append(table.qualified_name)
        if vectors.setdefault(table.index_name, table.vector) != table.vector:
            raise ConfigError(
                f"index {table.index_name}: table {table.qualified_name} has other [vector] "
                f"settings ({describe_vector(table.vector)}) than another table of the index "
                f"({describe_vector(vectors[table.index_name])}); give them the same"
            )
        for column, kind in table.metadata.items():
            if column in RESERVED_FIELDS:
                raise ConfigError(
                    f"table {table.qualified_name}: metadata column {column!r} collides with a "
                    f"field the connector writes ({', '.join(sorted(RESERVED_FIELDS))}); "
                    "rename it in a view, or leave it out of metadata"
                )
            if merged.setdefault(column, kind) != kind:
                raise ConfigError(
                    f"index {table.index_name}: metadata field {column!r} is {merged[column]} for "
                    f"one table and {kind} for {table.qualified_name}; give them one type"
                )
    return {
        name: IndexSpec(name, fields[name], tuple(members[name]), vectors[name]) for name in fields
    }


def describe_vector(vector: VectorSettings) -> str:
    """The vector options, as the index records them: `hnsw float32 cosine m=40 ...`."""
    options = ("initial_cap", "m", "ef_construction", "ef_runtime", "epsilon")
    given = [f"{name}={getattr(vector, name)}" for name in options if getattr(vector, name)]
    return " ".join([vector.algorithm, vector.type, vector.distance, *given])


def vector_args(vector: VectorSettings, dimensions: int) -> list[str]:
    """The FT.CREATE attributes of the `embedding` field."""
    attributes = [
        "TYPE", vector.type.upper(), "DIM", str(dimensions),
        "DISTANCE_METRIC", vector.distance.upper(),
    ]  # fmt: skip
    for name, value in (
        ("INITIAL_CAP", vector.initial_cap),
        ("M", vector.m),
        ("EF_CONSTRUCTION", vector.ef_construction),
        ("EF_RUNTIME", vector.ef_runtime),
        ("EPSILON", vector.epsilon),
    ):
        if value is not None:
            attributes += [name, str(value)]
    return [vector.algorithm.upper(), str(len(attributes)), *attributes]


def field_args(kind: str) -> list[str]:
    """The FT.CREATE / FT.ALTER attributes of a metadata field of `kind`."""
    return list(_FIELD_ARGS[kind])


def schema_args(spec: IndexSpec, dimensions: int) -> list[Any]:
    args: list[Any] = [
        "FT.CREATE", spec.physical_name, "ON", "HASH", "PREFIX", "1", spec.keys.chunk_prefix,
        "SCHEMA",
        "content", "TEXT",
        "table", "TAG",
        "pk", "TAG", "SEPARATOR", "\x1f",
        "chunk", "NUMERIC",
        "lsn", "NUMERIC",
    ]  # fmt: skip
    for column, kind in spec.fields.items():
        args += [column, *field_args(kind)]
    return [*args, "embedding", "VECTOR", *vector_args(spec.vector, dimensions)]


def read_meta(client: redis.Redis, spec: IndexSpec) -> dict[str, str]:
    """The model record of the index ({} before the first start)."""
    return {text(k): text(v) for k, v in client.hgetall(spec.keys.meta).items()}


def embedding_meta(model: Model, vector: VectorSettings) -> dict[str, str]:
    return {
        "provider": model.provider,
        "model": model.model,
        "dimensions": str(model.dimensions),
        "vector": describe_vector(vector),
        "schema_version": SCHEMA_VERSION,
    }


def check_server_supports(client: redis.Redis, spec: IndexSpec) -> None:
    """Refuse vector types the server's RediSearch does not have, naming the setting."""
    if spec.vector.type not in ("int8", "uint8"):
        return
    search = read_profile(client).search
    if search and not integer_vectors(search):
        raise ConfigError(
            f"index {spec.name}: vector.type = {spec.vector.type} needs RediSearch 8.0 or later "
            f"(Redis 8), and this server runs RediSearch {search}: use float32, "
            "float16 or bfloat16, or upgrade the server"
        )


def check_meta(index: str, meta: Mapping[str, str], expected: Mapping[str, str]) -> None:
    """Refuse to read an index built with another model, or by another schema version."""
    check_model(index, meta, expected)
    if meta.get("schema_version") != expected["schema_version"]:
        raise RedisIndexError(
            f"index {index} was built by another connector version (schema "
            f"{meta.get('schema_version')}, this one reads {expected['schema_version']}): "
            "`connector run` rebuilds it"
        )


def check_model(index: str, meta: Mapping[str, str], expected: Mapping[str, str]) -> None:
    for name in ("provider", "model", "dimensions"):
        if meta.get(name) != expected[name]:
            raise ModelMismatchError(
                f"index {index} was built with {meta.get('provider')}/{meta.get('model')} "
                f"({meta.get('dimensions')} dimensions) but the settings say "
                f"{expected['provider']}/{expected['model']} ({expected['dimensions']} "
                "dimensions): set [embedding] back, or rebuild the index with `connector reindex`"
            )
    # An index of a connector that did not record its vector options has the defaults.
    built = meta.get("vector", describe_vector(VectorSettings()))
    if built != expected["vector"]:
        raise ModelMismatchError(
            f"index {index} was built with vector options {built!r} but the settings say "
            f"{expected['vector']!r}: set [tables.vector] back, or rebuild the index with "
            "`connector reindex`"
        )

"""Which physical index a searcher reads: the alias's record, what that index was built with,
and the check that its model is one the searcher can embed with (sink.layout, sink.schema)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import redis

from connector.embed.base import Embedder
from connector.errors import RedisIndexError
from connector.query.embedders import QueryEmbedders
from connector.query.visibility import Docs
from connector.sink.layout import read_built, read_record
from connector.sink.schema import IndexSpec, check_meta, embedding_meta, read_meta


@dataclass(frozen=True, slots=True)
class ResolvedIndex:
    """The physical index the alias points at, as a search reads it: its spec, the embedder of
    its model, and the record's generation (None: no alias, the index under its own name)."""

    spec: IndexSpec
    embedder: Embedder
    generation: int | None


class Moved(Exception):
    """The alias points at another physical index than the search read."""


def resolve_alias(
    client: redis.Redis, resolved: ResolvedIndex, embedders: QueryEmbedders
) -> ResolvedIndex:
    """Read which physical index the alias of `resolved` points at now and what it was built
    with; refuse an index of another model unless an embedder for that model can be made."""
    record = read_record(client, resolved.spec.name)
    spec, generation = resolved.spec, None
    if record is not None:
        generation = record.generation
        built = read_built(client, record.current)
        spec = (
            built.spec(spec.name, record.current)
            if built is not None
            else replace(spec, physical=record.current.name, prefix=record.current.prefix)
        )
    meta = read_meta(client, spec)
    if not meta:
        raise RedisIndexError(
            f"index {spec.name} has no data yet (no {spec.keys.meta}): is the "
            "connector running against this Redis?"
        )
    embedder = embedders.for_index(meta, resolved.embedder)
    check_meta(spec.name, meta, embedding_meta(embedder, spec.vector))
    return ResolvedIndex(spec, embedder, generation)


def switched(client: redis.Redis, resolved: ResolvedIndex, error: Exception) -> bool:
    """Whether `error` (Moved, or a Redis error of the queries) means the alias switched to
    another index since `resolved` was read (a rebuild). A query error with no switch behind it
    is the caller's."""
    if not isinstance(error, redis.ResponseError):
        return True
    if resolved.generation is None:
        return False
    record = read_record(client, resolved.spec.name)
    return record is not None and record.generation != resolved.generation


def under(resolved: ResolvedIndex, found: Docs) -> Docs:
    """`found`, checked to come from the physical index of `resolved` (else the alias switched
    between reading its generation and the queries: Moved)."""
    prefix = resolved.spec.keys.chunk_prefix
    if any(not key.startswith(prefix) for key, _values in found):
        raise Moved
    return found

"""The Redis key layout (pure). See DESIGN.md, "Redis data model".

Primary keys are encoded so that any value makes one unambiguous key: each key column's text is
percent-encoded (so `:`, `,`, `%`, spaces and anything else are escaped) and the columns are
joined with `,`. An integer key 42 stays `42`; `("a:b", "c d")` becomes `a%3Ab,c%20d`.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote


def encode_key(values: tuple[str, ...]) -> str:
    return ",".join(quote(value, safe="") for value in values)


def decode_key(encoded: str) -> tuple[str, ...]:
    return tuple(unquote(part) for part in encoded.split(","))


def checkpoint_key(slot: str) -> str:
    """One per slot, shared by all its tables."""
    return f"connector:{slot}:checkpoint"


def alias_key(index: str) -> str:
    """The record of an index name (a RediSearch alias): its physical indexes (sink.layout)."""
    return f"connector:index:{index}"


def deadletter_key(index: str) -> str:
    """The dead-letter stream of an index name: the record of what to replay. It lies outside
    every physical index's prefix, so a rebuild, a switch or the retirement of the index before
    it (which unlink a prefix's keys, sink.layout) keeps it."""
    return f"connector:deadletter:{index}"


def failing_key(slot: str) -> str:
    """The tables whose changes are being dead-lettered (flow.health), for `status`."""
    return f"connector:{slot}:failing"


def staged_key(slot: str) -> str:
    """The LSN of the newest batch staging has started: while it is above the visible LSN,
    versions are pending, and a search they crowd asks again with the visibility filter."""
    return f"connector:{slot}:staged"


def durable_key(slot: str) -> str:
    """Written before each WAITAOF (which only waits for the caller's own writes)."""
    return f"connector:{slot}:durable"


def partitions_key(slot: str) -> str:
    """The partitions of partitioned tables the connector has copied (a HASH: partition ->
    table): one missing from it is new to the connector and is copied, one that is no longer a
    partition has its rows removed (flow.partitions)."""
    return f"connector:{slot}:partitions"


def stats_key(slot: str) -> str:
    """The daemon's counters, written every `pipeline.status_interval_s` for `status`."""
    return f"connector:{slot}:stats"


def embedding_cache_prefix(provider: str, model: str, dimensions: int) -> str:
    """Vectors of chunk texts by text hash, shared by every index built with this model."""
    return f"connector:embcache:{provider}:{model}:{dimensions}:"


@dataclass(frozen=True, slots=True)
class Keyspace:
    """The keys under one index prefix."""

    prefix: str

    @property
    def chunk_prefix(self) -> str:
        return f"{self.prefix}:chunk:"

    def chunk(self, table: str, key: str, chunk_id: str) -> str:
        """One chunk version of a row (its id: see core.versions)."""
        return f"{self.prefix}:chunk:{table}:{key}:{chunk_id}"

    def chunk_pattern(self, table: str) -> str:
        return f"{self.prefix}:chunk:{table}:*"

    def row_of_chunk(self, chunk_key: str, table: str) -> str:
        """The encoded row key of one of `table`'s chunk keys."""
        return chunk_key.removeprefix(f"{self.prefix}:chunk:{table}:").rsplit(":", 1)[0]

    def row(self, table: str, key: str) -> str:
        return f"{self.prefix}:row:{table}:{key}"

    def row_pattern(self, table: str | None = None) -> str:
        """The row manifests of `table`, or of every table of the index."""
        return f"{self.prefix}:row:{table}:*" if table else f"{self.prefix}:row:*"

    def floor(self, table: str) -> str:
        """Writes for the table at or below this LSN are stale: its last TRUNCATE, or the
        snapshot point of its last resync."""
        return f"{self.prefix}:floor:{table}"

    @property
    def meta(self) -> str:
        return f"{self.prefix}:meta"

    def table_of_row(self, row_key: str) -> str:
        """The table of a manifest key (`P:row:<schema.table>:<key>`; table names hold no `:`)."""
        return row_key.removeprefix(f"{self.prefix}:row:").partition(":")[0]

    def key_from_row(self, row_key: str, table: str) -> str:
        return row_key.removeprefix(f"{self.prefix}:row:{table}:")

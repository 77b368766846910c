"""How big each benchmark runs: the full run (default) and --quick."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    quick: bool
    ingest_rows: int  # one chunk each
    ingest_long_rows: int  # ~1,000 tokens each
    dimensions: tuple[int, ...]
    snapshot_rows: int
    freshness_rates: tuple[int, ...]
    freshness_seconds: float
    lone_commits: int
    query_chunks: tuple[int, ...]
    query_samples: int  # per variant, idle (half of it under ingest)
    qps_seconds: float
    resource_rows: int
    embedding_docs: int
    large_transaction_rows: int  # one INSERT ... SELECT
    contention_chunks: int  # searched from a second process under full ingest

    @classmethod
    def full(cls) -> Sizes:
        return cls(
            quick=False,
            ingest_rows=50_000,
            ingest_long_rows=2_500,
            dimensions=(384, 1536),
            snapshot_rows=50_000,
            freshness_rates=(50, 200, 1000),
            freshness_seconds=10.0,
            lone_commits=20,
            query_chunks=(10_000, 100_000),
            query_samples=1000,
            qps_seconds=4.0,
            resource_rows=50_000,
            embedding_docs=300,
            large_transaction_rows=1_000_000,
            contention_chunks=50_000,
        )

    @classmethod
    def small(cls) -> Sizes:
        return cls(
            quick=True,
            ingest_rows=5_000,
            ingest_long_rows=300,
            dimensions=(384, 1536),
            snapshot_rows=5_000,
            freshness_rates=(50, 200, 1000),  # issue #23's target is at 1,000
            freshness_seconds=5.0,
            lone_commits=20,
            query_chunks=(10_000,),
            query_samples=300,
            qps_seconds=2.0,
            resource_rows=5_000,
            embedding_docs=60,
            large_transaction_rows=50_000,
            contention_chunks=5_000,
        )

"""7. served embeddings: the connector against an OpenAI-compatible embedding server on loopback
with 20 ms of latency per request (connector.testing.openai_server), 384 dimensions, the shipped
embedding settings (128 inputs per request, 4 requests in flight, base64 vectors).

- A lone commit on an idle system: commit -> visible (the flip that makes it searchable, seen
  through Redis keyspace notifications, as in the freshness benchmark).
- One transaction of 2,000 rows (one COPY): from its commit until all of it is searchable.
  Ceiling: the same chunk texts embedded by the connector's own OpenAI client alone, same
  server, same run. The figure Timescale's pgai Vectorizer reached on this workload on this
  machine (an earlier session, same server latency, batch size and concurrency) is printed
  next to it: 1,160-1,275 rows/s once its poll fired.
"""

from __future__ import annotations

import time
from typing import Any

from bench.data import short_rows
from bench.env import Services, current_lsn, scenario, wait_streaming
from bench.freshness import Observer, _lone
from bench.ingest import load
from bench.report import BenchResult, fmt
from bench.sizes import Sizes
from connector.config import EmbeddingSettings
from connector.embed.openai import OpenAIEmbedder
from connector.testing.openai_server import FakeOpenAI

LATENCY_S = 0.020
DIMENSIONS = 384
TRANSACTION_ROWS = 2_000
LONE_P50_TARGET_MS = 22.0  # issue #23: the server's 20 ms and at most 2 ms of ours
ROWS_S_TARGET = 2_000.0
PGAI_ROWS_S = "1,160-1,275"


def run(services: Services, sizes: Sizes) -> BenchResult:
    result = BenchResult("served")
    server = FakeOpenAI(DIMENSIONS, latency_s=LATENCY_S).start()
    embedding: dict[str, object] = {
        "provider": "openai",
        "model": "text-embedding-3-small",
        "base_url": server.url,
        "api_key": "sk-bench-not-a-real-key",
    }
    try:
        with scenario(services, DIMENSIONS, embedding=embedding) as scene:
            with scene.daemon() as daemon:
                wait_streaming(daemon)
                observer = Observer(scene.redis_url, scene.slot)
                observer.start()
                try:
                    with scene.connect() as conn:
                        lone = _lone(conn, observer, scene, sizes.lone_commits, 1_000_000)
                finally:
                    observer.close()
                rows = short_rows(TRANSACTION_ROWS, seed=7, first_id=2_000_000)
                with scene.connect() as conn:
                    started = time.perf_counter()
                    load(conn, rows, per_txn=TRANSACTION_ROWS)
                    committed = time.perf_counter()
                    lsn = current_lsn(conn)
                scene.wait_searchable(lsn, timeout_s=120)
                seconds = time.perf_counter() - committed
            texts = [row.text for row in rows]
            settings = EmbeddingSettings.model_validate(embedding | {"dimensions": DIMENSIONS})
            embed_s = _embed_alone(settings, texts)
    finally:
        server.stop()
    print(f"  commit of {TRANSACTION_ROWS} rows took {committed - started:.2f} s", flush=True)
    data: dict[str, Any] = {
        "lone": lone,
        "transaction": {
            "rows": TRANSACTION_ROWS,
            "seconds": seconds,
            "rows_s": TRANSACTION_ROWS / seconds,
            "embed_alone_s": embed_s,
            "embed_alone_rows_s": TRANSACTION_ROWS / embed_s,
        },
    }
    result.data = data
    _figures(result, lone["visible"], data["transaction"])
    return result


def _embed_alone(settings: EmbeddingSettings, texts: list[str]) -> float:
    """Seconds the connector's OpenAI client takes to embed `texts` alone (the ceiling)."""
    embedder = OpenAIEmbedder(settings)
    try:
        embedder.embed(texts[:8])  # connect first, as the daemon had
        started = time.perf_counter()
        embedder.embed(texts)
        return time.perf_counter() - started
    finally:
        embedder.close()


def _figures(result: BenchResult, lone: dict[str, float], txn: dict[str, float]) -> None:
    result.add(
        f"lone commit -> visible, 20 ms embedding server, p50 of {lone['n']}",
        lone["p50"],
        "ms",
        ceilings=f"server latency {LATENCY_S * 1000:.0f} ms; max {fmt(lone['max'])} ms",
        target=f"p50 <= {LONE_P50_TARGET_MS:.0f} ms",
        met=lone["p50"] <= LONE_P50_TARGET_MS,
    )
    result.add(
        f"one {txn['rows']:,}-row transaction, commit -> all searchable",
        txn["rows_s"],
        "rows/s",
        ceilings=(
            f"embedding alone {fmt(txn['embed_alone_rows_s'])} rows/s; "
            f"pgai Vectorizer {PGAI_ROWS_S} (earlier run)"
        ),
        ratio=txn["rows_s"] / txn["embed_alone_rows_s"],
        target=f">= {ROWS_S_TARGET:,.0f} rows/s",
        met=txn["rows_s"] >= ROWS_S_TARGET,
    )

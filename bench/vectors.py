"""9. vector types: the same chunks (full 50,000, quick 10,000; hashing embedder, 384 d) in
three indexes built as the connector builds them (`connector.sink.schema.vector_args`, vectors
converted by `connector.core.vectors.encode`): FLAT FLOAT32 (exact: the ground truth), HNSW
FLOAT32 and HNSW FLOAT16. Measured in the same run: vector memory (FT.INFO
`vector_index_sz_mb`), and recall@10 of 200 queries against the exact FLAT answer. Target:
FLOAT16 halves vector memory with recall@10 >= 0.98 of FLOAT32's."""

from __future__ import annotations

from typing import Any

import redis

from bench.data import TextGen, short_rows
from bench.env import CLEANUP_TIMEOUT_S, Services, flush_redis
from bench.report import BenchResult
from bench.sizes import Sizes
from connector.config import VectorSettings
from connector.core.vectors import encode
from connector.embed import HashingEmbedder
from connector.sink.redis_client import command, search_docs
from connector.sink.schema import vector_args

DIMENSIONS = 384
QUERIES = 200
K = 10
RECALL_TARGET = 0.98
MEMORY_TARGET = 0.5

_CASES = {
    "flat_float32": VectorSettings(algorithm="flat"),
    "hnsw_float32": VectorSettings(),
    "hnsw_float16": VectorSettings(type="float16"),
}


def _build(client: redis.Redis, name: str, vector: VectorSettings, vectors: list[bytes]) -> None:
    command(
        client, "FT.CREATE", name, "ON", "HASH", "PREFIX", "1", f"{name}:",
        "SCHEMA", "embedding", "VECTOR", *vector_args(vector, DIMENSIONS),
    )  # fmt: skip
    for start in range(0, len(vectors), 1000):
        pipe = client.pipeline(transaction=False)
        for n, value in enumerate(vectors[start : start + 1000], start):
            pipe.hset(f"{name}:{n}", "embedding", encode(value, vector.type))
        pipe.execute()


def _top(client: redis.Redis, name: str, vector: VectorSettings, query: bytes) -> list[str]:
    options = "" if vector.algorithm == "flat" else " EF_RUNTIME 100"
    reply = command(
        client, "FT.SEARCH", name, f"*=>[KNN {K} @embedding $v{options} AS d]",
        "PARAMS", "2", "v", encode(query, vector.type), "SORTBY", "d", "ASC",
        "RETURN", "1", "d", "LIMIT", "0", str(K), "DIALECT", "2",
    )  # fmt: skip
    return [key for key, _fields in search_docs(reply)]


def _memory_mb(client: redis.Redis, name: str) -> float:
    info = command(client, "FT.INFO", name)
    return float(info.get(b"vector_index_sz_mb", 0) or 0)


def run(services: Services, sizes: Sizes) -> BenchResult:
    result = BenchResult("vectors")
    count = 10_000 if sizes.quick else 50_000
    embedder = HashingEmbedder(DIMENSIONS)
    vectors = embedder.embed([row.text for row in short_rows(count, seed=11)])
    gen = TextGen(12)
    queries = embedder.embed([gen.query() for _ in range(QUERIES)])
    client = redis.Redis.from_url(services.redis_url, protocol=3, socket_timeout=CLEANUP_TIMEOUT_S)
    flush_redis(client)
    try:
        for name, vector in _CASES.items():
            _build(client, name, vector, vectors)
        memory = {name: _memory_mb(client, name) for name in _CASES}
        truth = [set(_top(client, "flat_float32", _CASES["flat_float32"], q)) for q in queries]
        recall: dict[str, float] = {}
        for name in ("hnsw_float32", "hnsw_float16"):
            found = 0
            for query, exact in zip(queries, truth, strict=True):
                top = _top(client, name, _CASES[name], query)
                found += len(exact & {key.replace(name, "flat_float32", 1) for key in top})
            recall[name] = found / (K * len(queries))
    finally:
        flush_redis(client)
        client.close()
    data: dict[str, Any] = {"chunks": count, "memory_mb": memory, "recall_at_10": recall}
    result.data = data
    _figures(result, data)
    return result


def _figures(result: BenchResult, data: dict[str, Any]) -> None:
    memory, recall = data["memory_mb"], data["recall_at_10"]
    share = memory["hnsw_float16"] / memory["hnsw_float32"] if memory["hnsw_float32"] else 0.0
    result.add(
        f"FLOAT16 vector memory / FLOAT32, HNSW, {data['chunks']:,} chunks",
        share,
        "",
        ceilings=(
            f"{memory['hnsw_float16']:.1f} of {memory['hnsw_float32']:.1f} MB "
            f"(FLAT FLOAT32 {memory['flat_float32']:.1f} MB)"
        ),
        target=f"<= {MEMORY_TARGET:.2f}",
        met=share <= MEMORY_TARGET,
    )
    ratio = recall["hnsw_float16"] / recall["hnsw_float32"] if recall["hnsw_float32"] else 0.0
    result.add(
        "  recall@10 against exact FLAT: FLOAT16 / FLOAT32",
        ratio,
        "",
        ceilings=(f"FLOAT16 {recall['hnsw_float16']:.3f}, FLOAT32 {recall['hnsw_float32']:.3f}"),
        target=f">= {RECALL_TARGET:.2f}",
        met=ratio >= RECALL_TARGET,
    )

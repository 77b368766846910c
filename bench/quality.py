"""Ranking quality: recall@10 and MRR of search() (knn and hybrid) on a corpus with known
answers, and hybrid's latency on it.

The corpus is the demo's (connector.demo: the docstrings of this machine's standard library).
Each query is built from one document's own text, so that document is the right answer:
"phrase" queries are 6 consecutive words of it, "words" queries 4 of its words picked at
random (a keyword question, common words included). recall@10: the share of queries whose
document is among the 10 hits; MRR: the mean of 1 / the rank of its first hit (0 past 10).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench.env import Scenario, Services, num_docs, scenario, wait_streaming
from bench.report import BenchResult, fmt
from bench.sizes import Sizes
from bench.stats import summary
from connector.demo import stdlib_docstrings
from connector.query import Hit, search

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_]{2,}")
K = 10
Query = tuple[str, int]  # (text, the id of the row that holds the answer)


def _phrase(rng: random.Random, words: Sequence[str]) -> str:
    start = rng.randrange(max(1, len(words) - 6))
    return " ".join(words[start : start + 6])


def _some_words(rng: random.Random, words: Sequence[str]) -> str:
    return " ".join(rng.sample(list(words), min(4, len(words))))


KINDS: dict[str, Callable[[random.Random, Sequence[str]], str]] = {
    "phrase": _phrase,
    "words": _some_words,
}


def queries(docs: Sequence[tuple[str, str, str]], kind: str, n: int, seed: int = 11) -> list[Query]:
    """`n` queries of `kind`, each from the body of one document (row id = position + 1)."""
    rng = random.Random(seed)
    picked = rng.sample(range(len(docs)), min(n, len(docs)))
    made = []
    for index in picked:
        words = _WORD.findall(docs[index][1])
        if len(words) >= 6:
            made.append((KINDS[kind](rng, words), index + 1))
    return made


def rank_of(hits: Sequence[Hit], row_id: int) -> int | None:
    """The 1-based rank of the first hit of row `row_id` (None: not among them)."""
    for rank, hit in enumerate(hits, 1):
        if hit.key == (str(row_id),):
            return rank
    return None


def score(ranks: Sequence[int | None]) -> tuple[float, float]:
    """recall@K and MRR of the ranks of the right answers."""
    found = [r for r in ranks if r is not None and r <= K]
    return len(found) / len(ranks), sum(1 / r for r in found) / len(ranks)


def run(services: Services, sizes: Sizes) -> BenchResult:
    result = BenchResult("quality")
    docs = list(stdlib_docstrings(2_000 if sizes.quick else 6_000))
    with scenario(services, sizes.dimensions[0]) as scene:
        _load(scene, docs)
        with scene.daemon() as daemon:
            wait_streaming(daemon)
            client = scene.redis()
            chunks = num_docs(client)
            client.close()
            print(f"  {len(docs):,} docstrings, {chunks:,} chunks", flush=True)
            figures: dict[str, Any] = {"docs": len(docs), "chunks": chunks}
            for kind in KINDS:
                asked = queries(docs, kind, 150 if sizes.quick else 400)
                for mode in ("knn", "hybrid"):
                    figures[f"{kind} {mode}"] = _measure(result, scene.settings, asked, kind, mode)
    result.data["quality"] = figures
    return result


def _load(scene: Scenario, docs: Sequence[tuple[str, str, str]]) -> None:
    sql = "COPY documents (id, title, body, source) FROM STDIN"
    with scene.connect() as conn, conn.cursor() as cur, cur.copy(sql) as copy:
        for row_id, (title, body, source) in enumerate(docs, 1):
            copy.write_row((row_id, title, body, source))


def _measure(
    result: BenchResult, settings: Any, asked: Sequence[Query], kind: str, mode: str
) -> dict[str, float]:
    ranks, took = [], []
    for text, row_id in asked:
        started = time.perf_counter()
        hits = search(text, k=K, settings=settings, hybrid=mode == "hybrid")
        took.append((time.perf_counter() - started) * 1000)
        ranks.append(rank_of(hits, row_id))
    recall, mrr = score(ranks)
    latency = summary(took)
    result.add(
        f"{mode} recall@{K}, {kind} queries ({len(asked)})",
        recall,
        "",
        ceilings=f"MRR {mrr:.3f}; search() p50 {fmt(latency['p50'])} p99 {fmt(latency['p99'])} ms",
    )
    print(f"  {kind:6} {mode:6} recall@{K} {recall:.3f} MRR {mrr:.3f}", flush=True)
    return {"recall": recall, "mrr": mrr, "p99_ms": latency["p99"]}

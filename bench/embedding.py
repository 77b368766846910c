"""6. embedding efficiency: long documents (20 paragraphs, ~2,000 tokens) are indexed, then
every document gets one paragraph edited: first a sentence of it rewritten, then the whole
paragraph replaced. The tokens the connector sends to the embedder (counted with the chunker's
tiktoken encoding, by an embedder wrapper) are compared with what re-embedding every chunk of
each edited row would send. The connector runs in a thread here so its embedder can be
wrapped; what is measured is tokens, not time."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import Any

from bench.data import Row, TextGen, count_tokens, make_rows, row_chunks
from bench.env import Scenario, Services, current_lsn, scenario
from bench.ingest import load
from bench.report import BenchResult
from bench.sizes import Sizes
from connector.embed import HashingEmbedder
from connector.embed.tokenizer import get_encoding
from connector.testing.daemon import DaemonThread

RATIO_TARGET = 0.2
PARAGRAPHS = 20
WORDS_PER_PARAGRAPH = 37


class CountingEmbedder:
    """Wraps an embedder; counts the texts and tiktoken tokens sent to it."""

    def __init__(self, inner: HashingEmbedder, encoding_model: str) -> None:
        self.inner = inner
        self.encoding = get_encoding(encoding_model)
        self.provider = inner.provider
        self.model = inner.model
        self.dimensions = inner.dimensions
        self.texts = 0
        self.tokens = 0

    @property
    def stats(self) -> Any:
        return self.inner.stats

    def embed(self, texts: Sequence[str]) -> list[bytes]:
        self.texts += len(texts)
        self.tokens += sum(len(t) for t in self.encoding.encode_ordinary_batch(list(texts)))
        return self.inner.embed(texts)

    def close(self) -> None:
        self.inner.close()

    def counts(self) -> tuple[int, int, int]:
        return self.texts, self.tokens, self.inner.stats.tokens


def _edit(rows: list[Row], kind: str, seed: int) -> list[Row]:
    rng = random.Random(seed)
    gen = TextGen(seed)
    edited = []
    for row in rows:
        paragraphs = row.body.split("\n\n")
        n = rng.randrange(len(paragraphs))
        if kind == "sentence":  # rewrite the paragraph's last sentence
            head, _sep, _last = paragraphs[n].rstrip(".").rpartition(". ")
            paragraphs[n] = f"{head}. {gen.sentence()}" if head else gen.sentence()
        else:  # replace the whole paragraph
            paragraphs[n] = gen.paragraph(WORDS_PER_PARAGRAPH)
        edited.append(dataclasses.replace(row, body="\n\n".join(paragraphs)))
    return edited


def _update(scene: Scenario, rows: list[Row], per_txn: int = 100) -> None:
    with scene.connect() as conn:
        for start in range(0, len(rows), per_txn):
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(
                    "UPDATE documents SET body = %s WHERE id = %s",
                    [(row.body, row.id) for row in rows[start : start + per_txn]],
                )
        lsn = current_lsn(conn)
    scene.wait_searchable(lsn)


def _round(
    scene: Scenario, daemon: DaemonThread, name: str, rows: list[Row], whole_rows: bool
) -> dict[str, Any]:
    counter = daemon.embedder
    assert isinstance(counter, CountingEmbedder)
    applier = daemon.connector.applier
    written_before = applier.stats.chunks_written if applier is not None else 0
    before = counter.counts()
    if whole_rows:
        with scene.connect() as conn:
            load(conn, rows, per_txn=100)
            lsn = current_lsn(conn)
        scene.wait_searchable(lsn)
    else:
        _update(scene, rows)
    after = counter.counts()
    applier = daemon.connector.applier
    written = (applier.stats.chunks_written if applier is not None else 0) - written_before
    chunks = [chunk for texts in row_chunks(scene.settings, rows) for chunk in texts]
    whole = count_tokens(scene.settings, chunks)
    sent = after[1] - before[1]
    return {
        "round": name,
        "rows": len(rows),
        "texts_sent": after[0] - before[0],
        "tokens_sent": sent,
        "hashing_words_sent": after[2] - before[2],
        "whole_row_texts": len(chunks),
        "whole_row_tokens": whole,
        "ratio": sent / whole if whole else 0.0,
        "vectors_written": written,
        "vector_ratio": written / len(chunks) if chunks else 0.0,
    }


def run(services: Services, sizes: Sizes) -> BenchResult:
    result = BenchResult("embedding")
    rows = make_rows(sizes.embedding_docs, PARAGRAPHS, WORDS_PER_PARAGRAPH, seed=31)
    with scenario(services, sizes.dimensions[0]) as scene:
        counter = CountingEmbedder(
            HashingEmbedder(scene.settings.embedding.dimensions), scene.settings.embedding.model
        )
        with DaemonThread(scene.settings, counter).start(timeout_s=600) as daemon:
            rounds = [_round(scene, daemon, "insert", rows, whole_rows=True)]
            for n, kind in enumerate(("sentence", "paragraph")):
                rows = _edit(rows, kind, seed=40 + n)
                rounds.append(_round(scene, daemon, kind, rows, whole_rows=False))
    result.data = {"rounds": rounds}
    first = rounds[0]
    result.add(
        f"insert: tokens per document ({first['rows']} docs)",
        first["tokens_sent"] / first["rows"],
        "tokens",
        ceilings=f"{first['whole_row_texts'] / first['rows']:.1f} chunks per document",
    )
    for case in rounds[1:]:
        what = "a sentence rewritten" if case["round"] == "sentence" else "a paragraph replaced"
        result.add(
            f"1 paragraph edited ({what}): tokens sent / whole-row re-embed",
            case["ratio"],
            "",
            ceilings=(
                f"{case['tokens_sent']:,} of {case['whole_row_tokens']:,} tokens; "
                f"{case['texts_sent'] / case['rows']:.2f} of "
                f"{case['whole_row_texts'] / case['rows']:.1f} chunks per doc"
            ),
            target=f"<= {RATIO_TARGET:.2f}",
            met=case["ratio"] <= RATIO_TARGET,
        )
        result.add(
            f"  the same edit: Redis vector writes / whole-row rewrite ({what})",
            case["vector_ratio"],
            "",
            ceilings=(
                f"{case['vectors_written']:,} of {case['whole_row_texts']:,} chunk hashes "
                "written (an unchanged chunk keeps its key)"
            ),
            target=f"<= {RATIO_TARGET:.2f}",
            met=case["vector_ratio"] <= RATIO_TARGET,
        )
    return result

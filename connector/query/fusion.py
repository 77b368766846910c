"""Hybrid search's rank fusion: one ranking of the KNN and BM25 hits (pure)."""

from __future__ import annotations

from dataclasses import replace

from connector.query.hits import Hit

# Reciprocal rank fusion's constant (Cormack et al.): a hit's share is 1 / (60 + its rank).
_RRF_K = 60


def fuse_rankings(vector_hits: list[Hit], text_hits: list[Hit]) -> list[Hit]:
    """Reciprocal rank fusion of the KNN and BM25 rankings."""
    scores: dict[tuple[str, tuple[str, ...], int], float] = {}
    best: dict[tuple[str, tuple[str, ...], int], Hit] = {}
    for ranking in (vector_hits, text_hits):
        for rank, hit in enumerate(ranking):
            ident = (hit.table, hit.key, hit.chunk)
            scores[ident] = scores.get(ident, 0.0) + 1.0 / (_RRF_K + rank + 1)
            best.setdefault(ident, hit)
    order = sorted(scores, key=lambda ident: scores[ident], reverse=True)
    return [replace(best[i], score=scores[i]) for i in order]  # keeps the index that answered

"""Hybrid rank fusion (connector.query.fusion): pure, no servers.

tests/unit/test_search_query.py holds the first cases (order, ties, one entry per chunk).
"""

from __future__ import annotations

import pytest

from connector.query.fusion import fuse_rankings
from connector.query.hits import Hit


def hit(key: str, chunk: int = 0, **metadata: str) -> Hit:
    return Hit("public.docs", (key,), chunk, f"text {key}", 0.5, dict(metadata))


def test_chunks_of_one_row_are_ranked_apart() -> None:
    fused = fuse_rankings([hit("a", 0), hit("a", 1)], [hit("a", 1)])
    assert [(h.key, h.chunk) for h in fused] == [(("a",), 1), (("a",), 0)]


def test_a_hit_only_the_text_ranking_found_counts_its_rank_there() -> None:
    fused = fuse_rankings([hit("a"), hit("b")], [hit("x"), hit("y"), hit("b")])
    scores = {h.key[0]: h.score for h in fused}
    assert scores["b"] == pytest.approx(1 / 62 + 1 / 63)
    assert scores["x"] == pytest.approx(scores["a"])
    assert scores["y"] == pytest.approx(1 / 62)


def test_the_fused_hit_keeps_its_metadata_and_replaces_its_score() -> None:
    (fused,) = fuse_rankings([hit("a", lang="en")], [])
    assert fused.metadata == {"lang": "en"} and fused.score == pytest.approx(1 / 61)


def test_the_fused_hit_keeps_the_index_that_answered() -> None:
    answered = Hit("public.docs", ("a",), 0, "text a", 0.5, {}, index="docs.v2")
    (fused,) = fuse_rankings([answered], [answered])
    assert fused.index == "docs.v2"

"""Hits from FT.SEARCH replies and their scores (connector.query.hits): pure, no servers."""

from __future__ import annotations

import pytest

from connector.config import VectorSettings
from connector.query.hits import closeness, knn_score, make_hit, no_score, similarity
from connector.sink.schema import IndexSpec

SPEC = IndexSpec("docs", {"lang": "tag", "year": "numeric"}, ("public.docs",), physical="docs.v3")


def test_a_hit_is_made_of_its_chunks_fields() -> None:
    values = {
        "table": "public.docs", "pk": "a%2Cb,7", "chunk": "2", "content": "hello",
        "lang": "en\x1ffr", "year": "1999", "content_truncated": "1", "other": "x",
    }  # fmt: skip
    hit = make_hit(SPEC, values, 0.5)
    assert (hit.table, hit.key, hit.chunk, hit.content, hit.score) == (
        "public.docs", ("a,b", "7"), 2, "hello", 0.5
    )  # fmt: skip
    # tag lists as the user wrote them; only the index's fields and the truncation mark
    assert hit.metadata == {"lang": "en,fr", "year": "1999", "content_truncated": "1"}
    assert hit.index == "docs.v3"  # the physical index that answered


def test_a_hit_shows_the_text_as_written() -> None:
    values = {"content": "a b", "content_original": "a\u2028b"}
    assert make_hit(SPEC, values, 0.0).content == "a\u2028b"
    assert make_hit(SPEC, {}, 0.0).chunk == 0


def test_cosine_and_inner_product_scores_are_similarities() -> None:
    assert knn_score(SPEC) is similarity
    assert similarity({"__score": "0.25"}) == pytest.approx(0.75)


def test_l2_scores_fall_with_the_distance() -> None:
    l2 = IndexSpec("docs", {}, (), vector=VectorSettings(distance="l2"))
    assert knn_score(l2) is closeness
    assert closeness({"__score": "0"}) == 1.0 and closeness({"__score": "3"}) == 0.25
    assert closeness({}) == 0.0


def test_bm25_hits_score_nothing_of_their_own() -> None:
    assert no_score({"__score": "0.1"}) == 0.0

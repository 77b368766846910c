"""The pure parts of search (connector.query.searcher): filter queries and rank fusion."""

from __future__ import annotations

import pytest

from connector.errors import QueryError
from connector.query.searcher import Hit, build_query, fuse_rankings

FIELDS = {"lang": "tag", "year": "numeric", "summary": "text"}


def test_no_filters_match_everything_with_no_params() -> None:
    query = build_query(FIELDS, None)
    assert query.where == "*" and query.args() == []


def test_user_values_travel_as_params_never_as_query_syntax() -> None:
    query = build_query(FIELDS, {"lang": ["en", "a}|@b"], "summary": "hello world"})
    assert query.where == "@lang:{$p0 | $p1} @summary:($p2 $p3)"
    assert query.params == {"p0": "en", "p1": "a}|@b", "p2": "hello", "p3": "world"}
    assert query.args() == ["PARAMS", "8", "p0", "en", "p1", "a}|@b", "p2", "hello", "p3", "world"]


def test_backslashes_in_tag_values_are_doubled() -> None:
    assert build_query(FIELDS, {"lang": "a\\b"}).params == {"p0": "a\\\\b"}


def test_numeric_filters_are_exact_values_or_open_ranges() -> None:
    assert build_query(FIELDS, {"year": 2024}).where == "@year:[2024.0 2024.0]"
    assert build_query(FIELDS, {"year": (2000, None)}).where == "@year:[2000.0 +inf]"
    assert build_query(FIELDS, {"year": (None, 1.5)}).where == "@year:[-inf 1.5]"


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"colour": "red"}, "unknown filter field 'colour' (metadata fields: lang, summary, year)"),
        ({"year": "soon"}, "filter year: 'soon' is not a number"),
        ({"year": True}, "filter year: True is not a number"),
        ({"year": (float("nan"), None)}, "filter year: NaN is not a valid bound"),
        ({"lang": []}, "filter lang: tag values must not be empty"),
        ({"summary": "?!"}, "filter summary: no words to match in '?!'"),
        ({"summary": "w " * 400}, "filter summary: 400 words; at most 200"),  # Redis: 250
    ],
)
def test_bad_filters_name_the_field_and_the_problem(
    filters: dict[str, object], message: str
) -> None:
    with pytest.raises(QueryError) as caught:
        build_query(FIELDS, filters)  # type: ignore[arg-type]
    assert str(caught.value) == message


def hit(key: str, score: float = 0.0) -> Hit:
    return Hit("public.docs", (key,), 0, f"text {key}", score)


def test_fusion_ranks_hits_found_by_both_rankings_first() -> None:
    fused = fuse_rankings([hit("a"), hit("b"), hit("c")], [hit("c"), hit("d")])
    assert [h.key for h in fused] == [("c",), ("a",), ("b",), ("d",)]
    assert fused[0].score == pytest.approx(1 / 63 + 1 / 61)
    assert fused[1].score == pytest.approx(1 / 61)
    assert fused[2].score == fused[3].score == pytest.approx(1 / 62)  # a tie keeps KNN's order


def test_fusion_keeps_each_chunk_once_with_its_content() -> None:
    fused = fuse_rankings([hit("a", 0.9)], [hit("a", 3.0)])
    assert len(fused) == 1 and fused[0].content == "text a"


def test_fusion_of_nothing_is_nothing() -> None:
    assert fuse_rankings([], []) == []

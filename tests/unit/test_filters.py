"""A search's filters as query text (connector.query.filters): pure, no servers.

tests/unit/test_search_query.py holds the first cases (params, escapes, numeric ranges, errors).
"""

from __future__ import annotations

import pytest

from connector.errors import QueryError
from connector.query.filters import MAX_FILTER_WORDS, Query, build_query

FIELDS = {"lang": "tag", "year": "numeric", "summary": "text"}


def test_parameters_are_numbered_in_the_order_they_are_added() -> None:
    query = Query()
    assert [query.param("a"), query.param(b"\x00")] == ["$p0", "$p1"]
    assert query.args() == ["PARAMS", "4", "p0", "a", "p1", b"\x00"]


def test_filters_on_several_fields_are_all_required() -> None:
    query = build_query(FIELDS, {"lang": "en", "year": (1990, 2000)})
    assert query.where == "@lang:{$p0} @year:[1990.0 2000.0]"


def test_tag_values_are_written_as_the_index_holds_them() -> None:
    query = build_query(FIELDS, {"lang": [7, 2.5, True]})  # type: ignore[list-item]
    assert query.where == "@lang:{$p0 | $p1 | $p2}"
    assert list(query.params.values()) == ["7", "2.5", "true"]


def test_numbers_may_come_as_text() -> None:
    assert build_query(FIELDS, {"year": "1999"}).where == "@year:[1999.0 1999.0]"


def test_text_filters_match_the_words_the_index_holds() -> None:
    query = build_query(FIELDS, {"summary": "Hello,\u2028World"})  # a line separator splits too
    assert query.where == "@summary:($p0 $p1)"
    assert list(query.params.values()) == ["Hello", "World"]  # RediSearch folds case itself


def test_a_text_filter_may_have_the_most_words() -> None:
    query = build_query(FIELDS, {"summary": "w " * MAX_FILTER_WORDS})
    assert len(query.params) == MAX_FILTER_WORDS


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"lang": ("a", "b")}, "filter lang: a range applies to numeric fields, and lang is a "
                               "tag field: give a value or a list of values (any of)"),
        ({"summary": (1, 2)}, "filter summary: a range applies to numeric fields, and summary "
                              "is a text field: give a value"),
        ({"year": 10**400}, f"filter year: {10**400!r} is not a number"),
        ({"year": [1, 2]}, "filter year: [1, 2] is not a number"),
        ({"lang": ["en", ""]}, "filter lang: tag values must not be empty"),
    ],
)  # fmt: skip
def test_values_of_the_wrong_shape_are_refused(filters: dict[str, object], message: str) -> None:
    with pytest.raises(QueryError) as caught:
        build_query(FIELDS, filters)  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_an_index_without_metadata_names_none() -> None:
    with pytest.raises(QueryError, match=r"metadata fields: none\)"):
        build_query({}, {"lang": "en"})

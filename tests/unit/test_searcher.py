"""What a search refuses before any round trip (connector.query.searcher): no servers (the
Searcher has no Redis client here; any I/O would fail otherwise than asserted)."""

from __future__ import annotations

from typing import Any

import pytest

from connector.embed.hashing import HashingEmbedder
from connector.errors import QueryError
from connector.query.searcher import Searcher
from connector.sink.schema import IndexSpec


@pytest.fixture
def offline() -> Searcher:
    return Searcher(
        None, IndexSpec("docs", {"lang": "tag"}, ("public.docs",)), HashingEmbedder(8), "s"
    )  # type: ignore[arg-type]


def test_a_misspelt_keyword_is_refused_as_python_would(offline: Searcher) -> None:
    options: dict[str, Any] = {"hybird": True}
    with pytest.raises(TypeError, match="unexpected keyword argument 'hybird'"):
        offline.search("x", **options)
    with pytest.raises(TypeError, match="unexpected keyword argument 'index'"):
        offline.search_at("x", **{"index": "docs"})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("asked", "message"),
    [
        ({"k": 0}, "k must be a positive number of results, not 0"),
        ({"ef_runtime": 0}, "ef_runtime must be a positive number, not 0"),
        ({"filters": {"colour": "red"}}, "unknown filter field 'colour' (metadata fields: lang)"),
    ],
)
def test_bad_input_is_refused_before_any_io(
    offline: Searcher, asked: dict[str, Any], message: str
) -> None:
    with pytest.raises(QueryError) as caught:
        offline.search("x", **asked)
    assert str(caught.value) == message

"""The FT.SEARCH commands of a search and the HYBRID_POLICY choice (connector.query.commands):
pure, no servers."""

from __future__ import annotations

from dataclasses import replace

from connector.config import VectorSettings
from connector.core.lsn import Lsn
from connector.query.commands import KnnOptions, SearchCommands, choose_policy
from connector.query.filters import build_query
from connector.sink.schema import IndexSpec

SPEC = IndexSpec("docs", {"lang": "tag"}, ("public.docs",), physical="docs.v2", prefix="docs.v2")
RETURNED = ["content", "content_original", "table", "pk", "chunk", "content_truncated", "lang"]


def commands(filters: dict[str, str] | None = None, **changes: object) -> SearchCommands:
    plain = SearchCommands(SPEC, build_query(SPEC.fields, filters), b"vec")
    return replace(plain, **changes)  # type: ignore[arg-type]


def test_a_knn_asks_the_alias_by_score_with_the_fields_a_hit_needs() -> None:
    args = commands().knn(10, None)
    assert args == [
        "FT.SEARCH", "docs", "(*)=>[KNN 10 @embedding $p0 EF_RUNTIME 100 AS __score]",
        "PARAMS", "2", "p0", b"vec", "SORTBY", "__score", "ASC",
        "RETURN", "8", *RETURNED, "__score", "LIMIT", "0", "10", "DIALECT", "2",
    ]  # fmt: skip


def test_ef_runtime_is_four_times_the_candidates_unless_asked() -> None:
    assert "EF_RUNTIME 200 AS" in str(commands().knn(50, None)[2])
    asked = commands(knn_options=KnnOptions("", 300))
    assert "EF_RUNTIME 300 AS" in str(asked.knn(50, None)[2])
    assert "EF_RUNTIME 500 AS" in str(asked.knn(500, None)[2])  # never below the candidates


def test_a_flat_index_takes_no_ef_runtime() -> None:
    flat = replace(SPEC, vector=VectorSettings(algorithm="flat"))
    where = str(commands(spec=flat).knn(10, None)[2])
    assert where.startswith("(*)=>[KNN 10 @embedding $p0 ") and "EF_RUNTIME" not in where


def test_the_visibility_filter_joins_the_users_filters() -> None:
    args = commands({"lang": "en"}, knn_options=KnnOptions("HYBRID_POLICY BATCHES")).knn(
        5, Lsn(0x2A)
    )
    assert args[2] == (
        "(@lang:{$p0} @lsn:[-inf 42])=>"
        "[KNN 5 @embedding $p1 EF_RUNTIME 100 HYBRID_POLICY BATCHES AS __score]"
    )
    assert args[3:8] == ["PARAMS", "4", "p0", "en", "p1"]


def test_few_matches_are_brute_forced() -> None:
    args = commands({"lang": "en"}, knn_options=KnnOptions("ADHOC_BF", 300)).knn(5, None)
    assert args[2] == "(@lang:{$p0})=>[KNN 5 @embedding $p1 HYBRID_POLICY ADHOC_BF AS __score]"


def test_the_count_decides_the_policy() -> None:
    assert choose_policy({b"total_results": 2_000}) == "ADHOC_BF"
    assert choose_policy({b"total_results": 2_001}) == "HYBRID_POLICY BATCHES"
    assert choose_policy(None) == "ADHOC_BF"  # no count: nothing matches
    counted = commands(knn_options=KnnOptions("", 77)).counted({b"total_results": 5_000})
    assert counted.knn_options == KnnOptions("HYBRID_POLICY BATCHES", 77)


def test_the_count_returns_no_documents() -> None:
    assert commands({"lang": "en"}).count() == [
        "FT.SEARCH", "docs", "@lang:{$p0}", "PARAMS", "2", "p0", "en",
        "LIMIT", "0", "0", "DIALECT", "2",
    ]  # fmt: skip


def test_a_hybrid_search_has_a_bm25_leg_with_the_same_filters() -> None:
    knn_only = commands({"lang": "en"})
    assert len(knn_only.legs(10, None)) == 1
    knn, bm25 = replace(knn_only, words=("reset", "password")).legs(10, Lsn(7))
    assert knn[1:3] == knn_only.knn(10, Lsn(7))[1:3]
    assert bm25 == [
        "FT.SEARCH", "docs", "@content:($p1 | $p2) @lang:{$p0} @lsn:[-inf 7]",
        "PARAMS", "6", "p0", "en", "p1", "reset", "p2", "password", "SCORER", "BM25STD",
        "RETURN", "7", *RETURNED, "LIMIT", "0", "10", "DIALECT", "2",
    ]  # fmt: skip


def test_building_commands_leaves_the_users_query_alone() -> None:
    built = commands({"lang": "en"}, words=("x",))
    built.legs(10, Lsn(7))
    built.count()
    assert built.query.clauses == ["@lang:{$p0}"] and list(built.query.params) == ["p0"]

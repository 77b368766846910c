"""The FT.SEARCH commands of a search, and how its KNN runs (pure: builds, never sends).

A search is a KNN query and, when hybrid, a BM25 query with the same filters; a filtered KNN is
counted first, and the count picks its HYBRID_POLICY (`choose_policy`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from redis.typing import EncodableT

from connector.core.engine import TEXT_SCORER
from connector.core.lsn import Lsn
from connector.query.filters import Query
from connector.query.hits import returned_fields
from connector.query.visibility import visibility_clause
from connector.sink.schema import IndexSpec

# HNSW candidates examined per query. RediSearch's default (10) misses outliers among many
# near-identical vectors; 100 keeps recall high at a fraction of a millisecond more.
_MIN_EF = 100
# A filter matching at most this many chunks is searched by brute force (exact, and about as fast
# as HNSW at that size); more are searched in HNSW with the filter applied in batches.
BRUTE_FORCE_MAX = 2_000
_FEW, _MANY = "ADHOC_BF", "HYBRID_POLICY BATCHES"

Command = list[EncodableT]


@dataclass(frozen=True, slots=True)
class KnnOptions:
    """How a search's KNN runs: its HYBRID_POLICY ("": RediSearch's choice; a user filter's
    count picks one), and an EF_RUNTIME asked for by the search or the index settings."""

    policy: str = ""
    ef_runtime: int | None = None


def choose_policy(count_reply: object) -> str:
    """The HYBRID_POLICY for a filtered KNN, from the count of the documents it matches.
    RediSearch's own choice brute-forces filters that match thousands of documents (p99 7 ms
    at 100k chunks, 10% matching; bench/): few matches are brute-forced, more are searched in
    HNSW batches (p99 1.5 ms)."""
    matching = int(count_reply.get(b"total_results", 0)) if isinstance(count_reply, dict) else 0
    return _FEW if matching <= BRUTE_FORCE_MAX else _MANY


@dataclass(frozen=True, slots=True)
class SearchCommands:
    """The commands of one search of the index of `spec`: `query` holds the user's filters
    (all values as PARAMS), `words` the BM25 leg's words (none: no BM25 leg)."""

    spec: IndexSpec
    query: Query
    vector: bytes
    words: tuple[str, ...] = ()
    knn_options: KnnOptions = KnnOptions()

    def counted(self, count_reply: object) -> SearchCommands:
        """These commands with the KNN's policy picked by the reply of `count()`."""
        return replace(
            self, knn_options=replace(self.knn_options, policy=choose_policy(count_reply))
        )

    def policies(self) -> tuple[SearchCommands, SearchCommands]:
        """These commands for a filter that matches at most BRUTE_FORCE_MAX documents, and for
        one that matches more (the count's reply picks one where it is read: `counted`)."""
        few = replace(self, knn_options=replace(self.knn_options, policy=_FEW))
        return few, replace(self, knn_options=replace(self.knn_options, policy=_MANY))

    def count(self) -> Command:
        """How many documents the user's filters match (the count decides the policy)."""
        count = Query(self.query.clauses, dict(self.query.params))
        return [
            "FT.SEARCH", self.spec.name, count.where, *count.args(),
            "LIMIT", "0", "0", "DIALECT", "2",
        ]  # fmt: skip

    def legs(self, wanted: int, visible: Lsn | None) -> list[Command]:
        """The KNN, and the BM25 leg of a hybrid search; with the visibility filter at
        `visible` (None: nothing is pending above the view, no filter needed)."""
        legs = [self.knn(wanted, visible)]
        if self.words:
            legs.append(self.bm25(wanted, visible))
        return legs

    def knn(self, wanted: int, visible: Lsn | None) -> Command:
        # With no filter of the user's, RediSearch picks how to apply the visibility filter
        # (HYBRID_POLICY BATCHES missed rows while a resync doubled every vector: not used).
        clauses = [visibility_clause(visible)] if visible is not None else []
        query = Query([*self.query.clauses, *clauses], dict(self.query.params))
        param = query.param(self.vector)
        how = self.knn_options
        if how.policy == "ADHOC_BF":  # brute force over the few filtered documents: exact
            options = "HYBRID_POLICY ADHOC_BF"
        elif self.spec.vector.algorithm == "flat":  # exact already: no EF_RUNTIME
            options = how.policy
        else:
            ef = how.ef_runtime or max(_MIN_EF, 4 * wanted)
            options = f"EF_RUNTIME {max(ef, wanted)} {how.policy}".strip()
        knn = f"[KNN {wanted} @embedding {param} {options} AS __score]"
        return self._search(f"({query.where})=>{knn}", query, wanted, True)

    def bm25(self, wanted: int, visible: Lsn | None) -> Command:
        query = Query(list(self.query.clauses), dict(self.query.params))
        words_clause = "@content:(" + " | ".join(query.param(w) for w in self.words) + ")"
        query.clauses.insert(0, words_clause)
        if visible is not None:
            query.clauses.append(visibility_clause(visible))
        return self._search(query.where, query, wanted, False)

    def _search(self, where: str, query: Query, k: int, by_score: bool) -> Command:
        """FT.SEARCH with the query's parameters, returning the fields a hit needs."""
        sort: Command = ["SORTBY", "__score", "ASC"] if by_score else []
        # A full-text ranking names its scorer: servers differ in their default (core.engine).
        scorer: Command = [] if by_score else ["SCORER", TEXT_SCORER]
        fields = [*returned_fields(self.spec), *(["__score"] if by_score else [])]
        return [
            "FT.SEARCH", self.spec.name, where, *query.args(), *sort, *scorer,
            "RETURN", str(len(fields)), *fields, "LIMIT", "0", str(k), "DIALECT", "2",
        ]  # fmt: skip

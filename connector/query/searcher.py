"""search(): the bundled query function over the synced index.

It embeds the question with the model the index was built with (recorded in `P:meta`; another
model is refused), runs a KNN query with optional tag / numeric / text filters, optionally fuses
it with a full-text (BM25) query, and can first wait until the index has applied a given LSN
(read-your-writes for an application that just committed).

User values never become query syntax: tag and text values travel as query parameters
(PARAMS), numbers are parsed as numbers, and field names must be metadata fields of the index.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import redis
from redis.typing import EncodableT

from connector.config import EmbeddingSettings, Settings, load_settings
from connector.core.chunking import TRUNCATED_FIELD
from connector.core.fulltext import ORIGINAL_FIELD, readable
from connector.core.fulltext import words as fulltext_words
from connector.core.keys import alias_key, checkpoint_key, decode_key
from connector.core.lsn import Lsn
from connector.core.pgtypes import TAG_SEPARATOR, tag_text, tag_value
from connector.core.vectors import encode
from connector.core.versions import Manifest, id_lsn
from connector.embed import make_embedder
from connector.embed.base import Embedder
from connector.errors import ConnectorError, QueryError, RedisIndexError
from connector.sink.layout import read_built, read_record
from connector.sink.redis_client import client_for, command, search_docs, text
from connector.sink.schema import IndexSpec, check_meta, embedding_meta, index_specs, read_meta
from connector.sink.view import View, parse_view, queue_view, read_manifests

FilterValue = str | int | float | Sequence[str | int | float] | tuple[float | None, float | None]
_RRF_K = 60
# RediSearch 2.10 fails to parse a text filter of about 250 words ("Parser stack overflow"):
# more is the caller's error, said as such (serve.max_filter_words stays at or below it).
MAX_FILTER_WORDS = 200
# HNSW candidates examined per query. RediSearch's default (10) misses outliers among many
# near-identical vectors; 100 keeps recall high at a fraction of a millisecond more.
_MIN_EF = 100
# A min_lsn wait checks again after a twentieth of the time it has waited (at least 0.2 ms, at
# most 50 ms): a commit applied within milliseconds is seen within a fraction of one, and a
# long wait costs tens of HGETs a second, not a thousand.
_MIN_WAIT_PAUSE_S = 0.0002
_MAX_WAIT_PAUSE_S = 0.05
_WAIT_PAUSE_SHARE = 0.05
# A filter matching at most this many chunks is searched by brute force (exact, and about as fast
# as HNSW at that size); more are searched in HNSW with the filter applied in batches.
_BRUTE_FORCE_MAX = 2_000
# Extra candidates fetched so that hits on superseded versions (dropped by the manifest check)
# rarely leave fewer than k; when they do, the search asks again for as many as the share of
# current ones it saw calls for, up to a cap.
# Each candidate costs its fields and its row's manifest on the wire: few, then.
_OVERFETCH_MIN = 3
_MAX_FETCH = 1_000
_VIEW_ATTEMPTS = 5


class NotCaughtUpError(ConnectorError):
    """The index did not reach the requested LSN in time."""


@dataclass(frozen=True, slots=True)
class Hit:
    """One matching chunk of a source row."""

    table: str
    key: tuple[str, ...]
    chunk: int
    content: str
    # cosine similarity with `distance = "cosine"`, the inner product with "ip", 1 / (1 + squared
    # L2 distance) with "l2"; a fused rank score when hybrid
    score: float
    metadata: dict[str, str] = field(default_factory=dict)
    index: str = ""  # the physical index that answered (the alias's, sink.layout)


@dataclass(slots=True)
class Query:
    """A RediSearch query whose user values all travel as PARAMS, never as query syntax: the
    query string holds only field names (checked against the index) and parameter names."""

    clauses: list[str] = field(default_factory=list)
    params: dict[str, str | bytes] = field(default_factory=dict)

    def param(self, value: str | bytes) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return "$" + name

    @property
    def where(self) -> str:
        return " ".join(self.clauses) or "*"

    def args(self) -> list[str | bytes]:
        flat: list[str | bytes] = ["PARAMS", str(2 * len(self.params))] if self.params else []
        for name, value in self.params.items():
            flat += [name, value]
        return flat


def _number(value: object, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise QueryError(f"filter {name}: {value!r} is not a number")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise QueryError(f"filter {name}: {value!r} is not a number") from None
    if number != number:
        raise QueryError(f"filter {name}: NaN is not a valid bound")
    return repr(number)


def build_query(fields: Mapping[str, str], filters: Mapping[str, FilterValue] | None) -> Query:
    """The filter part of a query for `filters` ({field: value}); matches all when empty."""
    query = Query()
    for name, value in (filters or {}).items():
        kind = fields.get(name)
        if kind is None:
            known = ", ".join(sorted(fields)) or "none"
            raise QueryError(f"unknown filter field {name!r} (metadata fields: {known})")
        query.clauses.append(_clause(query, name, kind, value))
    return query


def _no_range(name: str, kind: str) -> QueryError:
    also = " or a list of values (any of)" if kind == "tag" else ""
    return QueryError(
        f"filter {name}: a range applies to numeric fields, and {name} is a {kind} field: "
        f"give a value{also}"
    )


def _clause(query: Query, name: str, kind: str, value: FilterValue) -> str:
    if kind == "tag":
        if isinstance(value, tuple):
            raise _no_range(name, kind)
        values = [value] if isinstance(value, str | int | float) else list(value)
        texts = [tag_text(tag_value(v)) for v in values]  # as the index holds them
        if not texts or not all(texts):
            raise QueryError(f"filter {name}: tag values must not be empty")
        # RediSearch still reads backslash escapes in a tag parameter: double them.
        params = [query.param(t.replace("\\", "\\\\")) for t in texts]
        return f"@{name}:{{" + " | ".join(params) + "}"
    if kind == "numeric":
        if isinstance(value, tuple):
            low, high = value
            low_text = "-inf" if low is None else _number(low, name)
            high_text = "+inf" if high is None else _number(high, name)
            return f"@{name}:[{low_text} {high_text}]"
        exact = _number(value, name)
        return f"@{name}:[{exact} {exact}]"
    if isinstance(value, tuple):
        raise _no_range(name, kind)
    words = fulltext_words(str(value))  # the words the index holds (core.fulltext)
    if not words:
        raise QueryError(f"filter {name}: no words to match in {value!r}")
    if len(words) > MAX_FILTER_WORDS:
        raise QueryError(f"filter {name}: {len(words)} words; at most {MAX_FILTER_WORDS}")
    return f"@{name}:(" + " ".join(query.param(w) for w in words) + ")"


@dataclass(frozen=True, slots=True)
class Found:
    """A search's hits, and the visible LSN they reflect (every commit up to it)."""

    hits: list[Hit]
    lsn: Lsn


@dataclass(frozen=True, slots=True)
class _Current:
    """The physical index the alias points at, as a search reads it: its spec, the embedder of
    its model, and the record's generation (None: no alias, the index under its own name)."""

    spec: IndexSpec
    embedder: Embedder
    generation: int | None


class Searcher:
    """Searches one index (an alias: it follows a switch to a rebuilt index, embedding with the
    model that index was built with); create once and reuse (it holds a Redis connection
    pool)."""

    def __init__(
        self,
        client: redis.Redis,
        spec: IndexSpec,
        embedder: Embedder,
        slot: str,
        query_cache_size: int = 1024,
        embedding: EmbeddingSettings | None = None,
    ) -> None:
        self.client = client
        self.slot = slot
        self._configured = embedder
        self._embedding = embedding  # makes an embedder for another model an index records
        self._state = _Current(spec, embedder, None)
        self._checked = False
        self._vectors: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._cache_size = query_cache_size
        self._cache_lock = threading.Lock()

    @property
    def spec(self) -> IndexSpec:
        return self._state.spec

    @property
    def embedder(self) -> Embedder:
        return self._state.embedder

    def _score(self, values: dict[str, str]) -> float:
        return (_closeness if self.spec.vector.distance == "l2" else _similarity)(values)

    def embed_query(self, text: str, embedder: Embedder | None = None) -> bytes:
        """The question's vector; recent questions come from an LRU cache (no API call)."""
        embedder = embedder or self.embedder
        cached = (f"{embedder.provider}/{embedder.model}/{embedder.dimensions}", text)
        with self._cache_lock:
            vector = self._vectors.get(cached)
            if vector is not None:
                self._vectors.move_to_end(cached)
                embedder.stats.cache_hits += 1
                return vector
        vector = embedder.embed([text])[0]
        if self._cache_size:
            with self._cache_lock:
                self._vectors[cached] = vector
                while len(self._vectors) > self._cache_size:
                    self._vectors.popitem(last=False)
        return vector

    def close(self) -> None:
        if self.embedder is not self._configured:
            self.embedder.close()
        self._configured.close()
        self.client.close()

    def check_index(self) -> IndexSpec:
        """Read again which index the alias points at and check its model (raises when the
        index is missing or of a model no embedder can be made for); its spec."""
        self._follow()
        self._checked = True
        return self.spec

    def _check_model(self) -> None:
        if not self._checked:
            self._follow()
            self._checked = True

    def _follow(self) -> None:
        """Read which physical index the alias points at and what it was built with; refuse an
        index of another model unless an embedder for that model can be made."""
        with self._cache_lock:
            state = self._state
        record = read_record(self.client, state.spec.name)
        spec, generation = state.spec, None
        if record is not None:
            generation = record.generation
            built = read_built(self.client, record.current)
            spec = (
                built.spec(spec.name, record.current)
                if built is not None
                else replace(spec, physical=record.current.name, prefix=record.current.prefix)
            )
        meta = read_meta(self.client, spec)
        if not meta:
            raise RedisIndexError(
                f"index {spec.name} has no data yet (no {spec.keys.meta}): is the "
                "connector running against this Redis?"
            )
        embedder = self._embedder_for(meta, state.embedder)
        check_meta(spec.name, meta, embedding_meta(embedder, spec.vector))
        with self._cache_lock:
            if embedder is not state.embedder and state.embedder is not self._configured:
                state.embedder.close()
            self._state = _Current(spec, embedder, generation)

    def _embedder_for(self, meta: Mapping[str, str], current: Embedder) -> Embedder:
        recorded = (meta.get("provider"), meta.get("model"), meta.get("dimensions"))
        for embedder in (current, self._configured):
            if recorded == (embedder.provider, embedder.model, str(embedder.dimensions)):
                return embedder
        if self._embedding is None or meta.get("provider") != self._embedding.provider:
            return self._configured  # refused by check_meta, naming both models
        update = {"model": meta["model"], "dimensions": int(meta["dimensions"])}
        return make_embedder(self._embedding.model_copy(update=update))

    def wait_for(self, min_lsn: Lsn | str, timeout_s: float = 5.0) -> Lsn:
        """Block until the index shows `min_lsn` (its visible LSN passed it); returns the
        visible LSN reached. While the connector rebuilds the index for another history of the
        source (a restore, a failover), the old index's visible LSN is of the old history:
        `min_lsn` waits for the switch to the new one."""
        target = _parse_lsn(min_lsn) if isinstance(min_lsn, str) else min_lsn
        began = time.monotonic()
        deadline = began + timeout_s
        while True:
            raw, replaced = self.client.hmget(checkpoint_key(self.slot), ["visible", "replaced"])
            current = Lsn.parse(text(raw)) if raw else Lsn(0)
            if current >= target and not replaced:
                return current
            if time.monotonic() >= deadline:
                rebuilding = (
                    f" (it is being rebuilt for another history of the source: {text(replaced)})"
                    if replaced
                    else ""
                )
                raise NotCaughtUpError(
                    f"index {self.spec.name} reached {current}, not {target}, within "
                    f"{timeout_s}s{rebuilding}: is the connector running and keeping up "
                    "(connector status)?"
                )
            waited = time.monotonic() - began
            time.sleep(min(max(waited * _WAIT_PAUSE_SHARE, _MIN_WAIT_PAUSE_S), _MAX_WAIT_PAUSE_S))

    def search(
        self,
        text: str,
        k: int = 5,
        filters: Mapping[str, FilterValue] | None = None,
        min_lsn: Lsn | str | None = None,
        hybrid: bool = False,
        timeout_s: float = 5.0,
        ef_runtime: int | None = None,
    ) -> list[Hit]:
        """The k best hits for `text`. `ef_runtime` overrides the index's HNSW EF_RUNTIME
        (`vector.ef_runtime`) for this search."""
        return self.search_at(text, k, filters, min_lsn, hybrid, timeout_s, ef_runtime).hits

    def search_at(
        self,
        text: str,
        k: int = 5,
        filters: Mapping[str, FilterValue] | None = None,
        min_lsn: Lsn | str | None = None,
        hybrid: bool = False,
        timeout_s: float = 5.0,
        ef_runtime: int | None = None,
        embedded: Callable[[float], None] | None = None,
    ) -> Found:
        """`search`, with the visible LSN the answer reflects; `embedded` is told how long the
        question took to embed (a cache hit included)."""
        if k <= 0:
            raise QueryError(f"k must be a positive number of results, not {k}")
        if ef_runtime is not None and ef_runtime <= 0:
            raise QueryError(f"ef_runtime must be a positive number, not {ef_runtime}")
        fields = self.spec.fields
        query = build_query(fields, filters)  # bad input is refused before any I/O
        self._check_model()
        if self.spec.fields != fields:  # the index has other fields than the settings say
            query = build_query(self.spec.fields, filters)
        if min_lsn is not None:
            self.wait_for(min_lsn, timeout_s)
        for _attempt in range(_VIEW_ATTEMPTS):
            state = self._state
            began = time.perf_counter()
            vector = encode(self.embed_query(text, state.embedder), state.spec.vector.type)
            if embedded is not None:
                embedded(time.perf_counter() - began)
            ef = ef_runtime or state.spec.vector.ef_runtime
            try:
                return self._search(state, text, vector, query, k, hybrid, ef)
            except _ViewTooOld:
                continue  # the versions it needed were collected: read the visible LSN again
            except (_Moved, redis.ResponseError) as exc:
                if not self._moved(state, exc):
                    raise
                query = build_query(self.spec.fields, filters)
        raise RedisIndexError(
            f"index {self.spec.name}: the rows kept changing faster than a search could read "
            "them; retry"
        )

    def _moved(self, state: _Current, exc: Exception) -> bool:
        """The alias switched to another index during the search (a rebuild): follow it. A
        query error with no switch behind it is the caller's."""
        if state.generation is None and isinstance(exc, redis.ResponseError):
            return False
        if isinstance(exc, redis.ResponseError):
            record = read_record(self.client, state.spec.name)
            if record is None or record.generation == state.generation:
                return False
        self._follow()
        return True

    def _search(
        self,
        state: _Current,
        text: str,
        vector: bytes,
        query: Query,
        k: int,
        hybrid: bool,
        ef: int | None,
    ) -> Found:
        """One search at one view, usually in two round trips: the view's reads with the
        queries queued after them (Redis runs them in order, so the queries see the index as
        of the view), then the manifests of the hits, which keep only the versions current at
        the view. A filter of the user's is counted there instead (the count decides how the
        KNN runs), and the queries follow. The queries run without the visibility filter
        (RediSearch answers a KNN with it far more slowly): versions staged above the view
        are dropped by the manifest check like superseded ones; only when they crowd the top
        does the search run again with the filter. The alias's generation is read first: a
        switch since `state` was read (or during the queries: hits of another prefix) raises
        _Moved."""
        need = 2 * k if hybrid else k  # a hybrid search fuses 2k of each ranking
        wanted = need + max(_OVERFETCH_MIN, need // 4)
        tables = list(self.spec.tables)
        pipe = self.client.pipeline(transaction=False)
        pipe.hget(alias_key(state.spec.name), "generation")
        reads = 1 + queue_view(pipe, self.slot, state.spec.keys, tables)
        if query.clauses:
            command(pipe, *self._count_args(query))
        else:
            for args in self._legs(text, vector, query, wanted, hybrid, None, _How("", ef)):
                command(pipe, *args)
        replies = pipe.execute(raise_on_error=False)
        if state.generation is not None and int(replies[0] or 0) != state.generation:
            raise _Moved
        for reply in replies:
            if isinstance(reply, redis.ResponseError):
                raise reply
        view = parse_view(replies[1:reads], tables)
        answers = replies[reads:]
        how = _How(_policy(answers[0]) if query.clauses else "", ef)
        if query.clauses:
            answers = self._run_legs(self._legs(text, vector, query, wanted, hybrid, None, how))
        found = [_under(state, search_docs(answer)) for answer in answers]
        # Manifests of the top `need` candidates of each ranking first: the others only if
        # staged or superseded versions were among those.
        manifests = self._manifests([hit for leg in found for hit in leg[:need]])
        hits = self._top(found[0], need, view, manifests, self._score)
        if len(hits) < need and len(found[0]) >= wanted and view.pending:
            # Staged versions crowded the top: ask again for versions at or below the view.
            answers = self._run_legs(self._legs(text, vector, query, wanted, hybrid, view, how))
            found = [search_docs(answer) for answer in answers]
            manifests = self._manifests([hit for leg in found for hit in leg[:need]])
            hits = self._top(found[0], need, view, manifests, self._score)
        if len(hits) < need and len(found[0]) >= wanted:  # superseded versions crowded the top
            hits = self._knn(vector, query, need, view, how, wanted, len(hits))
        if hybrid:
            bm25 = self._top(found[1], need, view, manifests, _no_score) if found[1:] else []
            hits = fuse_rankings(hits, bm25)
        return Found(hits[:k], view.visible)

    def _run_legs(self, legs: list[list[EncodableT]]) -> list[object]:
        """The replies of a search's legs (`_legs`), in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for args in legs:
            command(pipe, *args)
        return list(pipe.execute())

    def _top(
        self,
        found: list[tuple[str, dict[str, str]]],
        need: int,
        view: View,
        manifests: dict[tuple[str, str], Manifest],
        score: Callable[[dict[str, str]], float],
    ) -> list[Hit]:
        """The current hits among `found`, reading the manifests past the first `need` only
        when fewer than `need` of those were current."""
        hits = self._current(found[:need], view, manifests, score)
        if len(hits) < need and len(found) > need:
            manifests.update(self._manifests(found[need:]))
            hits += self._current(found[need:], view, manifests, score)
        return hits

    def _returned(self) -> list[str]:
        return [
            "content", ORIGINAL_FIELD, "table", "pk", "chunk", TRUNCATED_FIELD, *self.spec.fields
        ]  # fmt: skip

    def _legs(
        self,
        text: str,
        vector: bytes,
        query: Query,
        wanted: int,
        hybrid: bool,
        view: View | None,
        how: _How,
    ) -> list[list[EncodableT]]:
        """The FT.SEARCH commands of a search: the KNN, and the BM25 leg of a hybrid one; with
        the visibility filter at `view` (None: nothing is pending)."""
        legs = [self._knn_args(vector, query, wanted, view, how)]
        words = fulltext_words(text) if hybrid else []
        if words:
            legs.append(self._bm25_args(words, query, wanted, view))
        return legs

    def _knn_args(
        self, vector: bytes, query: Query, wanted: int, view: View | None, how: _How
    ) -> list[EncodableT]:
        # With no filter of the user's, RediSearch picks how to apply the visibility filter
        # (HYBRID_POLICY BATCHES missed rows while a resync doubled every vector: not used).
        clauses = [visibility_clause(view.visible)] if view is not None else []
        visible = Query([*query.clauses, *clauses], dict(query.params))
        param = visible.param(vector)
        if how.policy == "ADHOC_BF":  # brute force over the few filtered documents: exact
            options = "HYBRID_POLICY ADHOC_BF"
        elif self.spec.vector.algorithm == "flat":  # exact already: no EF_RUNTIME
            options = how.policy
        else:
            ef = how.ef_runtime or max(_MIN_EF, 4 * wanted)
            options = f"EF_RUNTIME {max(ef, wanted)} {how.policy}".strip()
        knn = f"[KNN {wanted} @embedding {param} {options} AS __score]"
        return self._search_args(f"({visible.where})=>{knn}", visible, wanted, True)

    def _bm25_args(
        self, words: list[str], query: Query, wanted: int, view: View | None
    ) -> list[EncodableT]:
        text_query = Query(list(query.clauses), dict(query.params))
        words_clause = "@content:(" + " | ".join(text_query.param(w) for w in words) + ")"
        text_query.clauses.insert(0, words_clause)
        if view is not None:
            text_query.clauses.append(visibility_clause(view.visible))
        return self._search_args(text_query.where, text_query, wanted, False)

    def _knn(
        self,
        vector: bytes,
        query: Query,
        k: int,
        view: View,
        how: _How,
        wanted: int,
        current: int,
    ) -> list[Hit]:
        """The KNN asked again for more candidates, until k current ones are among them:
        `current` of the `wanted` asked before were."""
        at = view if view.pending else None
        while True:
            wanted = _widened(wanted, k, current)
            found = search_docs(
                command(self.client, *self._knn_args(vector, query, wanted, at, how))
            )
            hits = self._current(found, view, self._manifests(found), self._score)
            if len(hits) >= k or len(found) < wanted or wanted >= _MAX_FETCH:
                return hits
            current = len(hits)

    def _count_args(self, query: Query) -> list[EncodableT]:
        """How a filtered KNN runs. RediSearch's own choice brute-forces filters that match
        thousands of documents (p99 7 ms at 100k chunks, 10% matching; bench/): few matches are
        brute-forced, more are searched in HNSW batches (p99 1.5 ms). One count decides."""
        count = Query(query.clauses, dict(query.params))
        return [
            "FT.SEARCH", self.spec.name, count.where, *count.args(),
            "LIMIT", "0", "0", "DIALECT", "2",
        ]  # fmt: skip

    def _manifests(
        self, found: list[tuple[str, dict[str, str]]]
    ) -> dict[tuple[str, str], Manifest]:
        """The manifests of the rows of `found`, in one round trip."""
        rows = list(dict.fromkeys((v.get("table", ""), v.get("pk", "")) for _k, v in found))
        keys = dict.fromkeys(self.spec.tables, self.spec.keys)
        return dict(zip(rows, read_manifests(self.client, keys, rows), strict=True))

    def _current(
        self,
        found: list[tuple[str, dict[str, str]]],
        view: View,
        manifests: Mapping[tuple[str, str], Manifest],
        score: Callable[[dict[str, str]], float],
    ) -> list[Hit]:
        """The hits whose chunk belongs to its row's version current at the view, in order,
        each with its position in that version. Raises _ViewTooOld when a row no longer holds
        the version the view needs (collected since the visible LSN was read)."""
        hits = []
        for key, values in found:
            row = (values.get("table", ""), values.get("pk", ""))
            chunk = key.rpartition(":")[2]
            manifest = manifests[row]
            version = view.current(row[0], manifest)
            if version is not None and chunk in version.chunks:
                values["chunk"] = str(version.chunks.index(chunk))
                hits.append(self._hit(values, score(values)))
            elif manifest.at(view.visible) is None and id_lsn(chunk) <= view.visible:
                raise _ViewTooOld
        return hits

    def _search_args(self, where: str, query: Query, k: int, by_score: bool) -> list[EncodableT]:
        """FT.SEARCH with the query's parameters, returning the fields a hit needs."""
        sort: list[EncodableT] = ["SORTBY", "__score", "ASC"] if by_score else []
        fields = [*self._returned(), *(["__score"] if by_score else [])]
        return [
            "FT.SEARCH", self.spec.name, where, *query.args(), *sort,
            "RETURN", str(len(fields)), *fields, "LIMIT", "0", str(k), "DIALECT", "2",
        ]  # fmt: skip

    def _hit(self, values: dict[str, str], score: float) -> Hit:
        return Hit(
            table=values.get("table", ""),
            key=decode_key(values.get("pk", "")),
            chunk=int(values.get("chunk", "0") or 0),
            content=readable(values.get("content", ""), values.get(ORIGINAL_FIELD)),
            score=score,
            metadata={
                f: values[f].replace(TAG_SEPARATOR, ",")
                for f in (*self.spec.fields, TRUNCATED_FIELD)
                if f in values
            },
            index=self.spec.physical_name,
        )


@dataclass(frozen=True, slots=True)
class _How:
    """How a search's KNN runs: its HYBRID_POLICY (from the count of a user filter's
    matches), and an EF_RUNTIME asked for by the search or the index settings."""

    policy: str
    ef_runtime: int | None


def _widened(wanted: int, need: int, current: int) -> int:
    """How many candidates to ask for after `current` of `wanted` were current: enough for
    `need` at that share, with a margin (and at least twice as many), up to the cap."""
    share = max(current, 1) / wanted
    return min(_MAX_FETCH, max(2 * wanted, math.ceil(1.5 * need / share)))


def _similarity(values: dict[str, str]) -> float:
    """COSINE and IP: RediSearch's distance is 1 - similarity (cosine, or inner product)."""
    return 1.0 - float(values.get("__score", "1"))


def _closeness(values: dict[str, str]) -> float:
    """L2: RediSearch's distance is the squared Euclidean distance d; the score is 1 / (1 + d)
    (1 for the same vector, towards 0 far away)."""
    return 1.0 / (1.0 + float(values.get("__score", "inf")))


def _no_score(_values: dict[str, str]) -> float:
    return 0.0  # a BM25 hit's place in its ranking is what fusion uses


def _policy(count_reply: object) -> str:
    """The HYBRID_POLICY for a filtered KNN, from the count of the documents it matches."""
    matching = int(count_reply.get(b"total_results", 0)) if isinstance(count_reply, dict) else 0
    return "ADHOC_BF" if matching <= _BRUTE_FORCE_MAX else "HYBRID_POLICY BATCHES"


def _parse_lsn(value: str) -> Lsn:
    try:
        return Lsn.parse(value)
    except ValueError as exc:
        raise QueryError(f"min_lsn: {exc}") from None


def visibility_clause(visible: Lsn) -> str:
    """The filter a reader adds to see only chunk versions written at or before `visible`
    (the checkpoint's `visible` field): what an external client (redisvl, raw FT.SEARCH) adds
    to read a consistent prefix. Without the manifest check `search()` also makes, such a
    client may still see a superseded or deleted row's chunk, for up to the garbage
    collection grace period."""
    return f"@lsn:[-inf {visible.value}]"


def visibility_filter(client: redis.Redis, slot: str) -> str:
    """`visibility_clause` at the visible LSN Redis holds now for `slot`: prepend it to the
    query of an external client, e.g. `f"{visibility_filter(r, 'connector')} @source:{{faq}}"`."""
    raw = client.hget(checkpoint_key(slot), "visible")
    return visibility_clause(Lsn.parse(text(raw)) if raw else Lsn(0))


def _under(
    state: _Current, found: list[tuple[str, dict[str, str]]]
) -> list[tuple[str, dict[str, str]]]:
    """`found`, checked to come from the physical index of `state` (else the alias switched
    between reading its generation and the queries)."""
    prefix = state.spec.keys.chunk_prefix
    if any(not key.startswith(prefix) for key, _values in found):
        raise _Moved
    return found


class _Moved(Exception):
    """The alias points at another physical index than the search read."""


class _ViewTooOld(Exception):
    """The versions a search needed were collected after it read the visible LSN."""


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
    return [
        Hit(best[i].table, best[i].key, best[i].chunk, best[i].content, scores[i], best[i].metadata)
        for i in order
    ]


# --------------------------------------------------------------------------- convenience

_SEARCHERS: dict[tuple[int, str], tuple[Settings, Searcher]] = {}
_DEFAULT_SETTINGS: list[Settings] = []


def searcher(settings: Settings, index: str | None = None) -> Searcher:
    """A Searcher for `index` (default: the first configured table's index), cached per
    settings object so repeated calls reuse the connection pool and the embedder."""
    cache_key = (id(settings), index or "")
    cached = _SEARCHERS.get(cache_key)
    if cached is not None and cached[0] is settings:  # the common path: no more work per call
        return cached[1]
    specs = index_specs(settings.tables)
    if not specs:
        raise ConnectorError("no tables configured: nothing to search")
    name = index or next(iter(specs))
    if name not in specs:
        raise ConnectorError(f"unknown index {name!r} (configured: {', '.join(specs)})")
    client = client_for(settings.redis)
    found = Searcher(
        client,
        specs[name],
        make_embedder(settings.embedding),
        settings.postgres.slot,
        settings.embedding.query_cache_size,
        settings.embedding,
    )
    _SEARCHERS[cache_key] = (settings, found)
    return found


def close_searchers() -> None:
    """Close the Searchers `searcher()` / `search()` made (connections, embedders)."""
    while _SEARCHERS:
        _key, (_settings, found) = _SEARCHERS.popitem()
        found.close()
    _DEFAULT_SETTINGS.clear()


def search(
    text: str,
    k: int = 5,
    filters: Mapping[str, FilterValue] | None = None,
    min_lsn: Lsn | str | None = None,
    *,
    settings: Settings | None = None,
    index: str | None = None,
    hybrid: bool = False,
    timeout_s: float = 5.0,
    ef_runtime: int | None = None,
) -> list[Hit]:
    """Search the synced index. `settings` default: load_settings() ($CONNECTOR_CONFIG)."""
    if settings is None:
        if not _DEFAULT_SETTINGS:
            _DEFAULT_SETTINGS.append(load_settings())
        settings = _DEFAULT_SETTINGS[0]
    found = searcher(settings, index)
    return found.search(text, k, filters, min_lsn, hybrid, timeout_s, ef_runtime)

"""search(): the bundled query function over the synced index, and `Searcher`, which makes its
round trips to Redis.

A search embeds the question with the model the index was built with (recorded in `P:meta`;
another model is refused: `query.alias`), runs a KNN query with optional tag / numeric / text
filters (`query.filters`, `query.commands`), optionally fuses it with a full-text (BM25) query
(`query.fusion`), keeps the chunks current at the visible LSN it read (`query.visibility`), and
can first wait until the index has applied a given LSN (read-your-writes for an application
that just committed).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import TypedDict, Unpack, cast

import redis
from redis.client import Pipeline

from connector.config import EmbeddingSettings, Settings, load_settings
from connector.core.fulltext import words as fulltext_words
from connector.core.keys import alias_key
from connector.core.lsn import Lsn
from connector.core.vectors import encode
from connector.core.versions import Manifest
from connector.embed import make_embedder
from connector.embed.base import Embedder
from connector.errors import ConnectorError, NotCaughtUpError, QueryError, RedisIndexError
from connector.query.alias import Moved, ResolvedIndex, resolve_alias, switched, under
from connector.query.commands import BRUTE_FORCE_MAX, Command, KnnOptions, SearchCommands
from connector.query.embedders import QueryEmbedders
from connector.query.filters import FilterValue, build_query
from connector.query.fusion import fuse_rankings
from connector.query.hits import Found, Hit, Score, knn_score, no_score
from connector.query.terms import TermCounts
from connector.query.trip import Answer, Ask, Recorded, Trip
from connector.query.visibility import (
    MAX_FETCH,
    Docs,
    ViewTooOld,
    current_hits,
    overfetched,
    rows_of,
    visibility_clause,
    visibility_filter,
    widened,
)
from connector.sink.checkpoint import read_progress
from connector.sink.redis_client import client_for
from connector.sink.schema import IndexSpec, index_specs
from connector.sink.view import View, parse_view, queue_view, read_manifests

# Importable from here as before the pieces moved out (connector.query re-exports them too).
__all__ = [
    "FilterValue",
    "Found",
    "Hit",
    "NotCaughtUpError",
    "SearchOptions",
    "Searcher",
    "build_query",
    "close_searchers",
    "fuse_rankings",
    "search",
    "searcher",
    "visibility_clause",
    "visibility_filter",
]

# A min_lsn wait checks again after a twentieth of the time it has waited (at least 0.2 ms, at
# most 50 ms): a commit applied within milliseconds is seen within a fraction of one, and a
# long wait costs tens of HGETs a second, not a thousand.
_MIN_WAIT_PAUSE_S = 0.0002
_MAX_WAIT_PAUSE_S = 0.05
_WAIT_PAUSE_SHARE = 0.05
_VIEW_ATTEMPTS = 5
_TIMEOUT_S = 5.0


class SearchOptions(TypedDict, total=False):
    """A search's optional keywords: `hybrid` (default False) fuses a BM25 ranking of the text
    with the KNN one; `timeout_s` (5.0) is how long `min_lsn` waits; `ef_runtime` overrides
    the index's HNSW EF_RUNTIME (`vector.ef_runtime`) for this search."""

    hybrid: bool
    timeout_s: float
    ef_runtime: int | None


class SearchKeywords(SearchOptions, total=False):
    """`search()`'s optional keywords: SearchOptions, and `index` (default: the first
    configured table's index)."""

    index: str | None


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
        # `embedding` makes an embedder for another model an index records
        self._embedders = QueryEmbedders(embedder, embedding, query_cache_size)
        self._resolved = ResolvedIndex(spec, embedder, None)
        self._checked = False
        self._trip = Trip(client)
        self.terms = TermCounts()  # how many chunks hold a word: the BM25 leg's words
        self._view_reads: dict[str, list[Command]] = {}  # by physical index
        self._lock = threading.Lock()  # `_resolved` is replaced by any searching thread

    @property
    def spec(self) -> IndexSpec:
        return self._resolved.spec

    @property
    def embedder(self) -> Embedder:
        return self._resolved.embedder

    def embed_query(self, text: str, embedder: Embedder | None = None) -> bytes:
        """The question's vector; recent questions come from an LRU cache (no API call)."""
        return self._embedders.vector(text, embedder or self.embedder)

    def close(self) -> None:
        self._embedders.retire(self.embedder)
        self._embedders.configured.close()
        self.client.close()

    def check_index(self) -> IndexSpec:
        """Read again which index the alias points at and check its model (raises when the
        index is missing or of a model no embedder can be made for); its spec."""
        self._resolve_alias()
        self._checked = True
        return self.spec

    def _check_model(self) -> None:
        if not self._checked:
            self.check_index()

    def _resolve_alias(self) -> None:
        """Read which physical index the alias points at and check its model (query.alias)."""
        with self._lock:
            old = self._resolved
        new = resolve_alias(self.client, old, self._embedders)
        with self._lock:
            if new.embedder is not old.embedder:
                self._embedders.retire(old.embedder)
            self._resolved = new

    def wait_for(self, min_lsn: Lsn | str, timeout_s: float = 5.0) -> Lsn:
        """Block until the index shows `min_lsn` (its visible LSN passed it); returns the
        visible LSN reached. While the connector rebuilds the index for another history of the
        source (a restore, a failover), the old index's visible LSN is of the old history:
        `min_lsn` waits for the switch to the new one."""
        target = _parse_lsn(min_lsn) if isinstance(min_lsn, str) else min_lsn
        began = time.monotonic()
        deadline = began + timeout_s
        while True:
            current, replaced = read_progress(self.client, self.slot)
            if current >= target and not replaced:
                return current
            if time.monotonic() >= deadline:
                rebuilding = (
                    f" (it is being rebuilt for another history of the source: {replaced})"
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
        **options: Unpack[SearchOptions],
    ) -> list[Hit]:
        """The k best hits for `text` (the keywords: SearchOptions)."""
        return self.search_at(text, k, filters, min_lsn, **options).hits

    def search_at(
        self,
        text: str,
        k: int = 5,
        filters: Mapping[str, FilterValue] | None = None,
        min_lsn: Lsn | str | None = None,
        *,
        embedded: Callable[[float], None] | None = None,
        **options: Unpack[SearchOptions],
    ) -> Found:
        """`search`, with the visible LSN the answer reflects; `embedded` is told how long the
        question took to embed (a cache hit included)."""
        ef_runtime = _checked(k, options)
        fields = self.spec.fields
        query = build_query(fields, filters)  # bad input is refused before any I/O
        self._check_model()
        if self.spec.fields != fields:  # the index has other fields than the settings say
            query = build_query(self.spec.fields, filters)
        if min_lsn is not None:
            self.wait_for(min_lsn, options.get("timeout_s", _TIMEOUT_S))
        hybrid = options.get("hybrid", False)
        words = tuple(fulltext_words(text)) if hybrid else ()
        for _attempt in range(_VIEW_ATTEMPTS):
            resolved = self._resolved
            began = time.perf_counter()
            vector = encode(self.embed_query(text, resolved.embedder), resolved.spec.vector.type)
            if embedded is not None:
                embedded(time.perf_counter() - began)
            how = KnnOptions("", ef_runtime or resolved.spec.vector.ef_runtime)
            try:
                ranked = self.terms.ranked(self.client, resolved.spec.physical_name, words)
                commands = SearchCommands(resolved.spec, query, vector, ranked, how)
                return self._search(resolved, commands, k, hybrid)
            except ViewTooOld:
                continue  # the versions it needed were collected: read the visible LSN again
            except (Moved, redis.ResponseError) as exc:
                if not self._moved(resolved, exc):
                    raise
                query = build_query(self.spec.fields, filters)
        raise RedisIndexError(
            f"index {self.spec.name}: the rows kept changing faster than a search could read "
            "them; retry"
        )

    def _moved(self, resolved: ResolvedIndex, exc: Exception) -> bool:
        """The alias switched to another index during the search (a rebuild): follow it. A
        query error with no switch behind it is the caller's."""
        if not switched(self.client, resolved, exc):
            return False
        self._resolve_alias()
        return True

    def _search(
        self, resolved: ResolvedIndex, commands: SearchCommands, k: int, hybrid: bool
    ) -> Found:
        """One search at one view, in one round trip (`query.trip`): the view's reads, the
        queries, and the manifests of the rows they hit, which keep only the versions current
        at the view. The queries run without the visibility filter (RediSearch answers a KNN
        with it far more slowly): versions staged above the view are dropped by the manifest
        check like superseded ones; only when they crowd the top does the search run again
        with the filter (another round trip, as is a KNN asked for more candidates)."""
        spec, score = resolved.spec, knn_score(resolved.spec)
        need = 2 * k if hybrid else k  # a hybrid search fuses 2k of each ranking
        wanted = overfetched(need)
        view, commands, answer = self._first(resolved, commands, wanted)
        found = [under(resolved, docs) for docs in answer.found]
        manifests = answer.manifests
        hits = self._top(spec, found[0], need, view, manifests, score)
        if len(hits) < need and len(found[0]) >= wanted and view.pending:
            # Staged versions crowded the top: ask again for versions at or below the view.
            answer = self._ask(spec, commands.legs(wanted, view.visible))
            found, manifests = answer.found, answer.manifests
            hits = self._top(spec, found[0], need, view, manifests, score)
        if len(hits) < need and len(found[0]) >= wanted:  # superseded versions crowded the top
            hits = self._knn(commands, need, view, wanted, len(hits))
        if hybrid:
            bm25 = self._top(spec, found[1], need, view, manifests, no_score) if found[1:] else []
            hits = fuse_rankings(hits, bm25)
        return Found(hits[:k], view.visible)

    def _first(
        self, resolved: ResolvedIndex, commands: SearchCommands, wanted: int
    ) -> tuple[View, SearchCommands, Answer]:
        """The first round trip: the alias's generation, the view's reads, the queries (Redis
        runs them after the reads, so the queries see the index as of the view) and the
        manifests of their rows. A filter of the user's is counted first (the count decides
        how the KNN runs: `commands` with that policy is returned). A switch since `resolved`
        was read raises Moved."""
        spec = resolved.spec
        filtered = bool(commands.query.clauses)
        few, many = commands.policies() if filtered else (commands, None)
        answer = self._trip.run(
            Ask(
                self._reads(spec),
                few.legs(wanted, None),
                _prefixes(spec),
                commands.count() if filtered else None,
                many.legs(wanted, None) if many is not None else (),
                BRUTE_FORCE_MAX,
            )
        )
        generation, *reads = answer.reads
        if resolved.generation is not None and int(generation or 0) != resolved.generation:
            raise Moved
        view = parse_view(reads, list(spec.tables))
        if filtered:
            commands = commands.counted(answer.counted)
        return view, commands, answer

    def _reads(self, spec: IndexSpec) -> list[Command]:
        """The alias's generation and the view's reads (sink.view.queue_view) as commands."""
        if spec.physical_name not in self._view_reads:  # the reads of the index it reads now
            self._view_reads = {spec.physical_name: view_reads(spec, self.slot)}
        return self._view_reads[spec.physical_name]

    def _ask(self, spec: IndexSpec, legs: list[Command]) -> Answer:
        """The replies of `legs` with the manifests of the rows they hit, in one round trip."""
        return self._trip.run(Ask((), legs, _prefixes(spec)))

    def _top(
        self, spec: IndexSpec, found: Docs, need: int, view: View,
        manifests: dict[tuple[str, str], Manifest], score: Score,
    ) -> list[Hit]:  # fmt: skip
        """The current hits among `found`, reading the manifests past the first `need` (those
        not read yet) only when fewer than `need` of those were current."""
        hits = current_hits(spec, found[:need], view, manifests, score)
        if len(hits) < need and len(found) > need:
            rest = [row for row in rows_of(found[need:]) if row not in manifests]
            if rest:
                keys = dict.fromkeys(spec.tables, spec.keys)
                manifests.update(zip(rest, read_manifests(self.client, keys, rest), strict=True))
            hits += current_hits(spec, found[need:], view, manifests, score)
        return hits

    def _knn(
        self, commands: SearchCommands, need: int, view: View, wanted: int, current: int
    ) -> list[Hit]:
        """The KNN asked again for more candidates, until `need` current ones are among them:
        `current` of the `wanted` asked before were."""
        at = view.visible if view.pending else None
        score = knn_score(commands.spec)
        while True:
            wanted = widened(wanted, need, current)
            answer = self._ask(commands.spec, [commands.knn(wanted, at)])
            found = answer.found[0]
            hits = current_hits(commands.spec, found, view, answer.manifests, score)
            if len(hits) >= need or len(found) < wanted or wanted >= MAX_FETCH:
                return hits
            current = len(hits)


def view_reads(spec: IndexSpec, slot: str) -> list[Command]:
    """The alias's generation and the view's reads (sink.view.queue_view) as commands."""
    recorded = Recorded()
    recorded.hget(alias_key(spec.name), "generation")
    queue_view(cast(Pipeline, recorded), slot, spec.keys, list(spec.tables))
    return recorded.commands


def _prefixes(spec: IndexSpec) -> dict[str, str]:
    """The manifest key prefix of each table of the index (a row's is the prefix + its key)."""
    return {table: spec.keys.row(table, "") for table in spec.tables}


def _checked(k: int, options: SearchOptions) -> int | None:
    """Refuse a bad `k`, `ef_runtime` or keyword before any I/O; the `ef_runtime` asked for."""
    unknown = sorted(set(options) - SearchOptions.__optional_keys__)
    if unknown:  # as Python says it of a keyword no signature names
        raise TypeError(f"search() got an unexpected keyword argument {unknown[0]!r}")
    if k <= 0:
        raise QueryError(f"k must be a positive number of results, not {k}")
    ef_runtime = options.get("ef_runtime")
    if ef_runtime is not None and ef_runtime <= 0:
        raise QueryError(f"ef_runtime must be a positive number, not {ef_runtime}")
    return ef_runtime


def _parse_lsn(value: str) -> Lsn:
    try:
        return Lsn.parse(value)
    except ValueError as exc:
        raise QueryError(f"min_lsn: {exc}") from None


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
    **options: Unpack[SearchKeywords],
) -> list[Hit]:
    """Search the synced index (the keywords: SearchKeywords). `settings` default:
    load_settings() ($CONNECTOR_CONFIG)."""
    if settings is None:
        if not _DEFAULT_SETTINGS:
            _DEFAULT_SETTINGS.append(load_settings())
        settings = _DEFAULT_SETTINGS[0]
    found = searcher(settings, options.get("index"))
    rest = cast(SearchOptions, {key: value for key, value in options.items() if key != "index"})
    return found.search(text, k, filters, min_lsn, **rest)

"""The embedders a searcher uses: the configured one, one made for another model an index
records (after a rebuild with another model), and an LRU of recent questions' vectors."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping

from connector.config import EmbeddingSettings
from connector.embed import make_embedder
from connector.embed.base import Embedder


class QueryEmbedders:
    """`configured` embeds unless an index records another model; `settings` (None: only the
    configured model) makes an embedder for that model. Thread-safe."""

    def __init__(
        self, configured: Embedder, settings: EmbeddingSettings | None, cache_size: int
    ) -> None:
        self.configured = configured
        self._settings = settings
        self._vectors: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def vector(self, text: str, embedder: Embedder) -> bytes:
        """The question's vector; recent questions come from the LRU cache (no API call)."""
        cached = (f"{embedder.provider}/{embedder.model}/{embedder.dimensions}", text)
        with self._lock:
            vector = self._vectors.get(cached)
            if vector is not None:
                self._vectors.move_to_end(cached)
                embedder.stats.cache_hits += 1
                return vector
        vector = embedder.embed([text])[0]
        if self._cache_size:
            with self._lock:
                self._vectors[cached] = vector
                while len(self._vectors) > self._cache_size:
                    self._vectors.popitem(last=False)
        return vector

    def for_index(self, meta: Mapping[str, str], current: Embedder) -> Embedder:
        """The embedder of the model an index's `P:meta` records: `current` or the configured
        one when either is that model, else one made for it (same provider only). The
        configured one otherwise: the model check refuses it, naming both models."""
        recorded = (meta.get("provider"), meta.get("model"), meta.get("dimensions"))
        for embedder in (current, self.configured):
            if recorded == (embedder.provider, embedder.model, str(embedder.dimensions)):
                return embedder
        if self._settings is None or meta.get("provider") != self._settings.provider:
            return self.configured
        update = {"model": meta["model"], "dimensions": int(meta["dimensions"])}
        return make_embedder(self._settings.model_copy(update=update))

    def retire(self, embedder: Embedder) -> None:
        """Close an embedder no longer used, unless it is the configured one."""
        if embedder is not self.configured:
            embedder.close()

"""A Redis cache of vectors keyed by (provider, model, dimensions, text hash).

Identical text in another row, in another table, or after a resync is not paid for again.
Entries expire after `embedding.cache_ttl_s`, so text that is no longer indexed does not stay.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

import redis

from connector.core.keys import embedding_cache_prefix
from connector.embed.base import Embedder, EmbeddingRejected, EmbeddingStats

log = logging.getLogger(__name__)


class CachedEmbedder:
    """Wraps an embedder; only texts the cache does not hold reach it."""

    def __init__(self, inner: Embedder, client: redis.Redis, ttl_s: int) -> None:
        self.inner = inner
        self.client = client
        self.ttl_s = ttl_s
        self._prefix = embedding_cache_prefix(inner.provider, inner.model, inner.dimensions)

    @property
    def provider(self) -> str:
        return self.inner.provider

    @property
    def model(self) -> str:
        return self.inner.model

    @property
    def dimensions(self) -> int:
        return self.inner.dimensions

    @property
    def stats(self) -> EmbeddingStats:
        return self.inner.stats

    def _key(self, text: str) -> str:
        return self._prefix + hashlib.blake2b(text.encode(), digest_size=16).hexdigest()

    def embed(self, texts: Sequence[str]) -> list[bytes]:
        if not texts:
            return []
        keys = [self._key(text) for text in texts]
        read = self.client.pipeline(transaction=False)  # GETs, not MGET: keys on any shard
        for key in keys:
            read.get(key)
        found: list[bytes | None] = [v if isinstance(v, bytes) else None for v in read.execute()]
        misses = [i for i, vector in enumerate(found) if vector is None]
        self.inner.stats.cache_hits += len(texts) - len(misses)
        if not misses:
            return [v for v in found if v is not None]
        try:
            fresh: list[bytes | None] = list(self.inner.embed([texts[i] for i in misses]))
            errors: dict[int, str] = {}
        except EmbeddingRejected as exc:
            fresh, errors = exc.vectors, {misses[i]: error for i, error in exc.errors.items()}
        pipe = self.client.pipeline(transaction=False)
        for i, vector in zip(misses, fresh, strict=True):
            found[i] = vector
            if vector is not None:
                pipe.set(keys[i], vector, ex=self.ttl_s)
        try:
            pipe.execute()
        except redis.OutOfMemoryError:  # a cache is optional; the index write will say why
            log.debug("vector cache not written: Redis is at maxmemory")
        if errors:
            raise EmbeddingRejected(found, errors)
        return [v for v in found if v is not None]

    def close(self) -> None:
        self.inner.close()
        self.client.close()

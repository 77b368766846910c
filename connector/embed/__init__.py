"""Embedding: providers behind one protocol (`Embedder`), chosen by `[embedding] provider`
(hashing, openai, local), the Redis vector cache in front of them, and the offline tokenizer.

It may import `core`; never `source`, `sink`'s writer or the daemon (the cache is handed its
Redis client).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from connector.embed.base import Embedder, EmbeddingStats, bytes_to_vector, vector_to_bytes
from connector.embed.hashing import HashingEmbedder

if TYPE_CHECKING:
    import redis

    from connector.config import EmbeddingSettings

__all__ = [
    "Embedder",
    "EmbeddingStats",
    "HashingEmbedder",
    "bytes_to_vector",
    "make_embedder",
    "vector_to_bytes",
]


def make_embedder(settings: EmbeddingSettings, cache: redis.Redis | None = None) -> Embedder:
    """The embedder the settings name, behind the Redis vector cache (in `cache`) when one is
    given and `embedding.cache` is on (not for `hashing`, which costs nothing)."""
    embedder: Embedder
    if settings.provider == "hashing":
        return HashingEmbedder(settings.dimensions)
    if settings.provider == "openai":
        from connector.embed.openai import OpenAIEmbedder

        embedder = OpenAIEmbedder(settings)
    else:
        from connector.embed.local import LocalEmbedder

        embedder = LocalEmbedder(settings)
    if cache is not None and settings.cache:
        from connector.embed.cache import CachedEmbedder

        embedder = CachedEmbedder(embedder, cache, settings.cache_ttl_s)
    return embedder

"""Embedding providers behind one protocol (`Embedder`), chosen by `[embedding] provider`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from connector.embeddings.base import (
    Embedder,
    EmbeddingStats,
    bytes_to_vector,
    vector_to_bytes,
)
from connector.embeddings.hashing import HashingEmbedder

if TYPE_CHECKING:
    from connector.config import EmbeddingSettings

__all__ = [
    "Embedder",
    "EmbeddingStats",
    "HashingEmbedder",
    "bytes_to_vector",
    "make_embedder",
    "vector_to_bytes",
]


def make_embedder(settings: EmbeddingSettings, redis_url: str | None = None) -> Embedder:
    """The embedder the settings name, behind the Redis vector cache when `redis_url` is given
    and `embedding.cache` is on (not for `hashing`, which costs nothing)."""
    embedder: Embedder
    if settings.provider == "hashing":
        return HashingEmbedder(settings.dimensions)
    if settings.provider == "openai":
        from connector.embeddings.openai import OpenAIEmbedder

        embedder = OpenAIEmbedder(settings)
    else:
        from connector.embeddings.local import LocalEmbedder

        embedder = LocalEmbedder(settings)
    if redis_url and settings.cache:
        from connector.embeddings.cache import CachedEmbedder
        from connector.redis_client import connect

        embedder = CachedEmbedder(embedder, connect(redis_url), settings.cache_ttl_s)
    return embedder

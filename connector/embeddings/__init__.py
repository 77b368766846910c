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
from connector.errors import ConfigError

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


def make_embedder(settings: EmbeddingSettings) -> Embedder:
    """The embedder the settings name; `hashing` is the one available in this version."""
    if settings.provider == "hashing":
        return HashingEmbedder(settings.dimensions)
    raise ConfigError(
        f"embedding.provider = {settings.provider!r} arrives in a later version of the "
        'connector; use provider = "hashing" for now [env CONNECTOR_EMBEDDING__PROVIDER]'
    )

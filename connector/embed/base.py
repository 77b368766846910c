"""What every embedding provider offers the daemon and the query side.

Vectors travel as bytes in the layout Redis stores for a FLOAT32 vector field: little-endian
float32, 4 * dimensions bytes. Providers return that directly, so nothing converts twice.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from connector.errors import EmbeddingRejected, EmbeddingUnavailable

__all__ = [
    "Embedder",
    "EmbeddingRejected",
    "EmbeddingStats",
    "EmbeddingUnavailable",
    "bytes_to_vector",
    "vector_to_bytes",
]


@dataclass
class EmbeddingStats:
    """Running counts of one embedder's work (what the benchmarks and tests compare)."""

    texts: int = 0
    tokens: int = 0
    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0


class Embedder(Protocol):
    """Turns texts into vectors. Implementations: hashing, openai, local (see `make_embedder`)."""

    @property
    def provider(self) -> str:
        """Which kind of provider (`hashing`, `openai`, `local`): recorded with the index."""
        ...

    @property
    def model(self) -> str:
        """The model name, recorded with the index so a query with another model is refused."""
        ...

    @property
    def dimensions(self) -> int: ...

    @property
    def stats(self) -> EmbeddingStats:
        """Counts of texts embedded so far (so a test can see what was re-embedded)."""
        ...

    def embed(self, texts: Sequence[str]) -> list[bytes]:
        """One vector per text, in order, each as little-endian FLOAT32 bytes."""
        ...

    def close(self) -> None:
        """Release connections or models; the embedder is not used afterwards."""
        ...


def vector_to_bytes(values: Iterable[float]) -> bytes:
    """Little-endian FLOAT32 bytes of `values` (the Redis vector field layout)."""
    vector = array("f", values)
    if sys.byteorder == "big":
        vector.byteswap()
    return vector.tobytes()


def bytes_to_vector(data: bytes) -> list[float]:
    """The floats in little-endian FLOAT32 `data` (inverse of `vector_to_bytes`)."""
    if len(data) % 4:
        raise ValueError(f"a FLOAT32 vector has a multiple of 4 bytes, not {len(data)}")
    vector = array("f")
    vector.frombytes(data)
    if sys.byteorder == "big":
        vector.byteswap()
    return vector.tolist()

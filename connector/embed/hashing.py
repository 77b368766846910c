"""A deterministic embedder by feature hashing: no model, no network, same vector everywhere.

Each word (and, with half the weight, each pair of adjacent words) adds +-1 to one of
`dimensions` coordinates chosen by a stable hash (blake2b, not Python's per-process salted
`hash()`); the sum is scaled to unit length. Texts that share words therefore point the same
way, which makes the whole pipeline testable and usable offline; it is not a semantic model.
Words are Unicode word characters after NFKC normalisation and case folding.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import sys
import unicodedata
from array import array
from collections.abc import Sequence
from itertools import pairwise

from connector.embed.base import EmbeddingStats

_WORD = re.compile(r"\w+")
_BIGRAM_WEIGHT = 0.5
_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # odd multiplier: makes (a, b) and (b, a) different pairs
# Hashed like a word, for texts without words: a fixed unit vector keeps cosine defined.
_EMPTY = "\0empty"


@functools.lru_cache(maxsize=1 << 16)
def _word_feature(word: str, dimensions: int) -> tuple[int, float, int, int]:
    """(coordinate, sign, key as first of a pair, key as second of a pair) of one word.

    Cached because words repeat a lot; a pair's coordinate is mixed from the two words' keys
    with integer arithmetic, so pairs (which rarely repeat) cost no hashing.
    """
    digest = hashlib.blake2b(word.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    sign = 1.0 if value & 1 else -1.0
    return (value >> 1) % dimensions, sign, value, (value * _GOLDEN) & _MASK


class HashingEmbedder:
    """The `hashing` provider (model `hashing-v1`): see the module docstring."""

    provider = "hashing"
    model = "hashing-v1"

    def __init__(self, dimensions: int = 384, *, bigrams: bool = True) -> None:
        if dimensions < 1:
            raise ValueError(f"dimensions must be positive, not {dimensions}")
        self.dimensions = dimensions
        self.bigrams = bigrams
        self.stats = EmbeddingStats()
        self._zeros = array("f", bytes(4 * dimensions))

    def embed(self, texts: Sequence[str]) -> list[bytes]:
        vectors = []
        words = 0
        for text in texts:
            vector, count = self._vector(text)
            vectors.append(vector)
            words += count
        self.stats.texts += len(vectors)
        self.stats.tokens += words
        self.stats.requests += 1
        return vectors

    def close(self) -> None:
        """Nothing to release."""

    def _vector(self, text: str) -> tuple[bytes, int]:
        """The vector of `text` and its word count.

        Accumulates into a float32 array and touches only the coordinates words hit, so the
        cost grows with the text, not with `dimensions`.
        """
        words = _WORD.findall(unicodedata.normalize("NFKC", text).casefold())
        dimensions = self.dimensions
        features = [_word_feature(word, dimensions) for word in words]
        values = self._zeros[:]
        touched = []
        for index, sign, _, _ in features:
            values[index] += sign
            touched.append(index)
        if self.bigrams:
            for (_, _, first, _), (_, _, _, second) in pairwise(features):
                mixed = first ^ second
                index = (mixed >> 1) % dimensions
                values[index] += _BIGRAM_WEIGHT if mixed & 1 else -_BIGRAM_WEIGHT
                touched.append(index)
        hit = set(touched)
        norm = math.sqrt(sum([values[i] * values[i] for i in hit]))
        if norm == 0.0:  # no words (or, very rarely, features that cancel out)
            index, sign, _, _ = _word_feature(_EMPTY, dimensions)
            values[index], norm, hit = sign, 1.0, {index}
        scale = 1.0 / norm
        for i in hit:
            values[i] *= scale
        if sys.byteorder == "big":
            values.byteswap()
        return values.tobytes(), len(words)

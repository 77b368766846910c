"""The embedder protocol, FLOAT32 bytes, the hashing embedder and the factory (no servers)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from connector.config import EmbeddingSettings
from connector.embed import (
    Embedder,
    HashingEmbedder,
    bytes_to_vector,
    make_embedder,
    vector_to_bytes,
)
from connector.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["The quick brown fox jumps over the lazy dog", "", "東京都の天気 😀", "a b a b"]


def cosine(a: bytes, b: bytes) -> float:
    x, y = bytes_to_vector(a), bytes_to_vector(b)
    return sum(p * q for p, q in zip(x, y, strict=True)) / (math.hypot(*x) * math.hypot(*y))


def test_vectors_are_little_endian_float32() -> None:
    assert vector_to_bytes([1.0, -2.5]) == struct.pack("<2f", 1.0, -2.5)
    assert bytes_to_vector(struct.pack("<3f", 0.5, 0.0, -1.0)) == [0.5, 0.0, -1.0]
    with pytest.raises(ValueError, match="multiple of 4"):
        bytes_to_vector(b"\x00\x00\x00")


@pytest.mark.parametrize("dimensions", [1, 8, 384, 1536])
def test_hashing_vectors_have_the_right_size_and_unit_norm(dimensions: int) -> None:
    embedder = HashingEmbedder(dimensions)
    vectors = embedder.embed([*TEXTS, "!!! ???", "   "])
    assert len(vectors) == len(TEXTS) + 2
    for vector in vectors:
        assert len(vector) == 4 * dimensions
        assert math.hypot(*bytes_to_vector(vector)) == pytest.approx(1.0, abs=1e-6)


def test_texts_without_words_get_one_fixed_vector() -> None:
    embedder = HashingEmbedder(64)
    empty, punctuation = embedder.embed(["", " -- !? "])
    assert empty == punctuation
    assert any(bytes_to_vector(empty))


def test_hashing_is_deterministic_and_matches_the_recorded_vector() -> None:
    """Changing these values changes every stored vector: give the model a new name then."""
    embedder = HashingEmbedder(384)
    vector = bytes_to_vector(embedder.embed([TEXTS[0]])[0])
    nonzero = [(i, round(v, 6)) for i, v in enumerate(vector) if v]
    assert len(nonzero) == 16  # 8 distinct words + 8 word pairs, no collisions
    assert nonzero[:6] == [
        (28, 0.27735),
        (60, 0.27735),
        (67, 0.138675),
        (133, -0.27735),
        (137, -0.27735),
        (152, 0.27735),
    ]
    assert embedder.embed(TEXTS) == HashingEmbedder(384).embed(TEXTS)


def test_hashing_is_the_same_in_another_process() -> None:
    code = textwrap.dedent(
        """
        import hashlib, json, sys
        from connector.embed import HashingEmbedder
        texts = json.loads(sys.stdin.read())
        print(hashlib.sha256(b"".join(HashingEmbedder(384).embed(texts))).hexdigest())
        """
    )
    expected = hashlib.sha256(b"".join(HashingEmbedder(384).embed(TEXTS))).hexdigest()
    for seed in ("0", "1", "12345"):
        done = subprocess.run(
            [sys.executable, "-c", code], input=json.dumps(TEXTS), capture_output=True,
            text=True, cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": seed}, check=True,
        )  # fmt: skip
        assert done.stdout.strip() == expected


def test_related_texts_are_closer_than_unrelated_ones() -> None:
    embedder = HashingEmbedder(384)
    query, related, unrelated = embedder.embed(
        [
            "the cat sat on the mat",
            "a cat sat on a warm mat",
            "stock prices fell sharply on monday",
        ]
    )
    assert cosine(query, related) > 0.4
    assert cosine(query, related) > cosine(query, unrelated) + 0.3


def test_case_and_unicode_forms_do_not_matter() -> None:
    embedder = HashingEmbedder(128)
    a, b = embedder.embed(["Straße ﬁle CAFÉ", "STRASSE file cafe\u0301"])
    assert cosine(a, b) == pytest.approx(1.0, abs=1e-6)


def test_stats_count_texts_words_and_requests() -> None:
    embedder = HashingEmbedder(32)
    embedder.embed(["one two three", "four"])
    embedder.embed([])
    assert (embedder.stats.texts, embedder.stats.tokens, embedder.stats.requests) == (2, 4, 2)
    assert embedder.stats.cache_hits == 0
    embedder.close()


def test_hashing_embedder_meets_the_protocol() -> None:
    embedder: Embedder = HashingEmbedder(16)
    assert (embedder.provider, embedder.model, embedder.dimensions) == ("hashing", "hashing-v1", 16)
    with pytest.raises(ValueError, match="dimensions"):
        HashingEmbedder(0)


def test_make_embedder_builds_the_configured_provider() -> None:
    embedder = make_embedder(EmbeddingSettings(provider="hashing", dimensions=96))
    assert isinstance(embedder, HashingEmbedder)
    assert embedder.dimensions == 96


def test_openai_without_a_key_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="CONNECTOR_EMBEDDING__API_KEY"):
        make_embedder(EmbeddingSettings(provider="openai"))

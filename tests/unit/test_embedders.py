"""A searcher's embedders (connector.query.embedders): the question LRU and the embedder of an
index's recorded model. No servers: the hashing provider embeds in process."""

from __future__ import annotations

from connector.config import EmbeddingSettings
from connector.embed.hashing import HashingEmbedder
from connector.query.embedders import QueryEmbedders


def recorded(embedder: HashingEmbedder) -> dict[str, str]:
    return {"provider": "hashing", "model": "hashing-v1", "dimensions": str(embedder.dimensions)}


def test_a_repeated_question_is_not_embedded_again() -> None:
    embedder = HashingEmbedder(16)
    embedders = QueryEmbedders(embedder, None, cache_size=2)
    first = embedders.vector("reset password", embedder)
    assert embedders.vector("reset password", embedder) == first
    assert (embedder.stats.requests, embedder.stats.cache_hits) == (1, 1)


def test_the_least_recently_asked_question_leaves_the_cache_first() -> None:
    embedder = HashingEmbedder(16)
    embedders = QueryEmbedders(embedder, None, cache_size=2)
    for text in ("a", "b", "a", "c"):  # "b" is the least recent when "c" comes
        embedders.vector(text, embedder)
    embedders.vector("a", embedder)
    assert embedder.stats.requests == 3
    embedders.vector("b", embedder)
    assert embedder.stats.requests == 4


def test_no_cache_embeds_every_time() -> None:
    embedder = HashingEmbedder(16)
    embedders = QueryEmbedders(embedder, None, cache_size=0)
    embedders.vector("a", embedder)
    embedders.vector("a", embedder)
    assert (embedder.stats.requests, embedder.stats.cache_hits) == (2, 0)


def test_models_do_not_share_cached_vectors() -> None:
    small, large = HashingEmbedder(8), HashingEmbedder(16)
    embedders = QueryEmbedders(small, None, cache_size=8)
    assert len(embedders.vector("a", small)) != len(embedders.vector("a", large))


def test_an_index_of_the_configured_or_current_model_keeps_its_embedder() -> None:
    configured, current = HashingEmbedder(16), HashingEmbedder(32)
    embedders = QueryEmbedders(configured, EmbeddingSettings(dimensions=16), cache_size=8)
    assert embedders.for_index(recorded(configured), current) is configured
    assert embedders.for_index(recorded(current), current) is current


def test_an_index_of_another_model_of_the_provider_gets_an_embedder_for_it() -> None:
    configured = HashingEmbedder(16)
    embedders = QueryEmbedders(configured, EmbeddingSettings(dimensions=16), cache_size=8)
    made = embedders.for_index(recorded(HashingEmbedder(24)), configured)
    assert (made.provider, made.dimensions) == ("hashing", 24)


def test_without_settings_or_of_another_provider_the_configured_one_is_left_to_refuse() -> None:
    configured = HashingEmbedder(16)
    other = {"provider": "openai", "model": "text-embedding-3-small", "dimensions": "16"}
    with_settings = QueryEmbedders(configured, EmbeddingSettings(dimensions=16), cache_size=8)
    assert with_settings.for_index(other, configured) is configured
    without = QueryEmbedders(configured, None, cache_size=8)
    assert without.for_index(recorded(HashingEmbedder(24)), configured) is configured

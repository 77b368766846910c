"""Real embedding providers: the `openai` client against an OpenAI-compatible server on loopback
(with the faults a paid API has on bad days), the local model, the vector cache, and answers."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

import psycopg
import pytest

from connector.config import EmbeddingSettings, Settings
from connector.core.keys import deadletter_key
from connector.core.lsn import Lsn
from connector.embed import HashingEmbedder, bytes_to_vector, make_embedder
from connector.embed.openai import OpenAIEmbedder
from connector.embed.tokenizer import get_encoding
from connector.errors import EmbeddingRejected
from connector.query import searcher
from connector.sink.checkpoint import read_checkpoint
from connector.sink.redis_client import connect
from connector.testing.daemon import DaemonThread
from connector.testing.openai_server import FakeOpenAI, Fault
from tests.support import assert_index_equals_table, make_settings, openai_settings, synced, wal_lsn

Start = Callable[[Settings], DaemonThread]


def connector_settings(dsn: str, url: str, server: FakeOpenAI, **extra: object) -> Settings:
    return make_settings(dsn, url, embedding=openai_settings(server, **extra))


def cosine(a: bytes, b: bytes) -> float:
    x, y = bytes_to_vector(a), bytes_to_vector(b)
    dot = sum(p * q for p, q in zip(x, y, strict=True))
    return dot / (math.sqrt(sum(p * p for p in x)) * math.sqrt(sum(q * q for q in y)))


def test_batches_respect_count_and_token_limits_and_concurrency(fake_openai: FakeOpenAI) -> None:
    fake_openai.latency_s = 0.05
    settings = EmbeddingSettings(
        **openai_settings(fake_openai, batch_size=8, max_batch_tokens=60, max_concurrency=2)  # type: ignore[arg-type]
    )
    embedder = OpenAIEmbedder(settings)
    texts = [f"text number {i} " + "word " * (i % 12) for i in range(50)]
    try:
        vectors = embedder.embed(texts)
    finally:
        embedder.close()
    encoding = get_encoding(settings.model)
    batches = fake_openai.embedding_inputs()
    assert sum(len(b) for b in batches) == 50 and len(batches) > 7
    assert all(len(batch) <= 8 for batch in batches)
    assert all(sum(len(encoding.encode(t)) for t in batch) <= 60 for batch in batches)
    assert fake_openai.max_concurrent == 2  # used, and never more
    assert vectors == HashingEmbedder(fake_openai.dimensions).embed(texts)  # in order
    assert embedder.stats.texts == 50 and embedder.stats.requests == len(batches)
    # vectors travel as base64 of the FLOAT32 bytes Redis stores: no JSON floats to parse
    assert {r.body.get("encoding_format") for r in fake_openai.requests} == {"base64"}


def test_over_long_chunk_is_truncated_to_the_model_limit(fake_openai: FakeOpenAI) -> None:
    settings = EmbeddingSettings(**openai_settings(fake_openai, max_input_tokens=50))  # type: ignore[arg-type]
    embedder = OpenAIEmbedder(settings)
    long_text = " ".join(f"w{i}" for i in range(400))
    try:
        embedder.embed([long_text, "short"])
    finally:
        embedder.close()
    encoding = get_encoding(settings.model)
    sent = fake_openai.embedding_inputs()[0]
    assert len(encoding.encode(sent[0])) == 50
    assert long_text.startswith(sent[0]) and sent[1] == "short"


def test_rejected_text_is_narrowed_down_and_the_rest_embedded(fake_openai: FakeOpenAI) -> None:
    fake_openai.reject_marker = "POISON"
    embedder = OpenAIEmbedder(EmbeddingSettings(**openai_settings(fake_openai)))  # type: ignore[arg-type]
    texts = [f"fine {i}" for i in range(7)] + ["POISON here"] + [f"fine {i}" for i in range(7, 9)]
    try:
        with pytest.raises(EmbeddingRejected) as rejected:
            embedder.embed(texts)
    finally:
        embedder.close()
    assert list(rejected.value.errors) == [7]
    assert "400" in rejected.value.errors[7] and "refused" in rejected.value.errors[7]
    assert all(v is not None for i, v in enumerate(rejected.value.vectors) if i != 7)


def test_rate_limits_and_server_errors_are_retried_following_retry_after(
    migrated_dsn: str, redis_url: str, run_connector: Start, fake_openai: FakeOpenAI
) -> None:
    fake_openai.faults = [Fault(429, {"Retry-After": "1"}), Fault(500), Fault(503)]
    settings = connector_settings(migrated_dsn, redis_url, fake_openai)
    running = run_connector(settings)
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        for i in range(20):
            conn.execute(
                "INSERT INTO documents (title, body, source) VALUES (%s, %s, 'r')",
                [f"title {i}", f"body text of row {i}"],
            )
    synced(settings, migrated_dsn, timeout_s=60)
    assert_index_equals_table(settings, migrated_dsn)
    times = [r.at for r in fake_openai.requests]
    assert times[1] - times[0] >= 1.0, "the retry did not wait what Retry-After asked"
    assert running.embedder.stats.retries >= 3
    client = connect(redis_url)
    assert len(client.keys("documents:chunk:*")) == 20  # nothing duplicated
    client.close()


def test_provider_down_holds_the_position_then_catches_up(
    migrated_dsn: str, redis_url: str, run_connector: Start, fake_openai: FakeOpenAI
) -> None:
    settings = connector_settings(migrated_dsn, redis_url, fake_openai, retry_max_s=3.0)
    run_connector(settings)
    client = connect(redis_url)
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO documents (title, body) VALUES ('before', 'the outage')")
        synced(settings, migrated_dsn)
        fake_openai.stop()
        conn.execute("INSERT INTO documents (title, body) VALUES ('first', 'during the outage')")
        first_outage_commit = Lsn.parse(wal_lsn(conn))
        deadline = time.monotonic() + 10
        i = 0
        while time.monotonic() < deadline:
            i += 1
            conn.execute("INSERT INTO documents (title, body) VALUES (%s, 'during')", [f"r{i}"])
            row = conn.execute(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                "WHERE slot_name = 'test_slot'"
            ).fetchone()
            checkpoint = read_checkpoint(client, "test_slot")
            assert checkpoint is not None and checkpoint.lsn < first_outage_commit
            assert row is not None and Lsn.parse(str(row[0])) <= checkpoint.lsn
            time.sleep(0.5)
        fake_openai.start()
        last = wal_lsn(conn)
    searcher(settings).wait_for(last, timeout_s=60)
    assert_index_equals_table(settings, migrated_dsn)
    client.close()


def test_refused_row_is_dead_lettered_and_the_stream_moves_on(
    migrated_dsn: str, redis_url: str, run_connector: Start, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reject_marker = "POISON"
    settings = connector_settings(migrated_dsn, redis_url, fake_openai)
    run_connector(settings)
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO documents (id, title, body) VALUES (1, 'ok', 'fine text'),"
            " (2, 'bad', 'POISON text'), (3, 'ok too', 'more fine text')"
        )
        conn.execute("INSERT INTO documents (id, title, body) VALUES (4, 'later', 'still here')")
    found = synced(settings, migrated_dsn)
    keys = {hit.key for hit in found.search("fine text still here later ok", k=10)}
    assert keys == {("1",), ("3",), ("4",)}
    client = connect(redis_url)
    letters = client.xrange(deadletter_key("documents"))
    assert len(letters) == 1
    fields = {k.decode(): v.decode() for k, v in letters[0][1].items()}
    assert "id='2'" in fields["row"] and "400" in fields["error"]
    client.close()


def test_same_text_in_two_rows_is_embedded_once_with_the_cache(
    migrated_dsn: str, redis_url: str, run_connector: Start, fake_openai: FakeOpenAI
) -> None:
    settings = connector_settings(migrated_dsn, redis_url, fake_openai)
    running = run_connector(settings)
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO documents (title, body) VALUES ('same', 'identical body')")
        synced(settings, migrated_dsn)
        conn.execute("INSERT INTO documents (title, body) VALUES ('same', 'identical body')")
        synced(settings, migrated_dsn)
    sent = [text for batch in fake_openai.embedding_inputs() for text in batch]
    assert sent.count("same\n\nidentical body") == 1
    assert running.embedder.stats.cache_hits >= 1
    assert_index_equals_table(settings, migrated_dsn)


def test_repeated_question_costs_no_api_call(
    migrated_dsn: str, redis_url: str, run_connector: Start, fake_openai: FakeOpenAI
) -> None:
    settings = connector_settings(migrated_dsn, redis_url, fake_openai)
    run_connector(settings)
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO documents (title, body) VALUES ('q', 'question cache')")
    found = synced(settings, migrated_dsn)
    before = len(fake_openai.requests)
    first = found.search("what about the question cache", k=1)
    second = found.search("what about the question cache", k=1)
    assert first == second
    assert len(fake_openai.requests) == before + 1


def test_answer_streams_with_the_retrieved_rows_in_the_prompt(
    migrated_dsn: str, redis_url: str, run_connector: Start, fake_openai: FakeOpenAI
) -> None:
    from connector.query.answerer import Answerer

    settings = make_settings(
        migrated_dsn,
        redis_url,
        embedding=openai_settings(fake_openai),
        chat={"model": "gpt-test", "max_context_tokens": 60},
    )
    run_connector(settings)
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        for i in range(6):
            conn.execute(
                "INSERT INTO documents (id, title, body) VALUES (%s, %s, %s)",
                [i, f"otters {i}", f"Sea otters hold hands while sleeping, fact number {i}."],
            )
    synced(settings, migrated_dsn)
    pieces: list[str] = []
    answerer = Answerer(settings)
    try:
        result = answerer.stream("do sea otters hold hands", k=6, on_token=pieces.append)
    finally:
        answerer.close()
    assert len(pieces) > 3 and "".join(pieces) == fake_openai.chat_reply == result.text
    chat = [r.body for r in fake_openai.requests if r.path.endswith("/chat/completions")]
    assert len(chat) == 1 and chat[0]["stream"] is True and chat[0]["model"] == "gpt-test"
    prompt = chat[0]["messages"][-1]["content"]
    assert 1 <= len(result.sources) < 6, "the token budget should leave some sources out"
    for number, hit in enumerate(result.sources, 1):
        assert f"[{number}]" in prompt and hit.content in prompt
    assert len(get_encoding("gpt-test").encode(prompt)) < 60 + 40
    assert result.cited == result.sources[:1]  # the reply cites [1]


@pytest.mark.local_model
def test_local_model_embeds_offline_and_related_texts_are_nearer() -> None:
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            raise  # CI installs the local extra: this test must run there
        pytest.skip("the local extra is not installed")
    os.environ["HF_HUB_OFFLINE"] = "1"
    embedder = make_embedder(EmbeddingSettings(provider="local", dimensions=384))
    cat, kitten, taxes = embedder.embed(
        [
            "A cat is sleeping on the sofa.",
            "A kitten naps on the couch.",
            "The quarterly tax filing deadline is next Monday.",
        ]
    )
    assert len(cat) == 4 * 384
    assert cosine(cat, kitten) > cosine(cat, taxes) + 0.2
    assert embedder.model == "all-MiniLM-L6-v2" and embedder.provider == "local"
    embedder.close()

"""Security of inputs and secrets: user strings cannot change a query's meaning, secrets never
reach output, and the least-privilege role from migrations/ is all the connector needs."""

from __future__ import annotations

import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.config import Settings
from connector.core.pgtypes import PgValue, metadata_field, tag_text
from connector.embed import HashingEmbedder
from connector.errors import ConfigError
from connector.query import Searcher
from connector.query.answerer import Answerer, chat_api_key
from connector.sink.redis_client import command, connect
from connector.sink.schema import IndexSpec, embedding_meta, schema_args
from connector.testing.config import write_config
from connector.testing.daemon import spawn
from connector.testing.openai_server import FakeOpenAI
from connector.testing.services import free_port
from tests.support import assert_index_equals_table, cli, insert, make_settings, synced

SPEC = IndexSpec("sec", {"source": "tag", "title": "text", "n": "numeric"}, ("public.t",))
EMBEDDER = HashingEmbedder(32)


@pytest.fixture(scope="module")
def index(services: object) -> Iterator[Searcher]:
    from connector.testing.services import Services

    assert isinstance(services, Services)
    client = connect(services.redis_url)
    client.flushall()
    command(client, *schema_args(SPEC, EMBEDDER.dimensions))  # an index with no alias
    client.hset("sec:meta", mapping=embedding_meta(EMBEDDER, SPEC.vector))
    client.hset("connector:sec_slot:checkpoint", "visible", "0/1")  # versions at LSN 1 show
    yield Searcher(client, SPEC, EMBEDDER, "sec_slot")
    client.flushall()
    client.close()


_counter = iter(range(10**9))
# Any text PostgreSQL can hold (no NUL), of assigned code points: punctuation, query syntax,
# control characters, quotes, backslashes, emoji, CJK, right-to-left text...
user_text = st.text(
    st.characters(blacklist_categories=("Cs", "Co", "Cn"), blacklist_characters="\x00"),
    min_size=1,
    max_size=40,
)


@settings(
    max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=user_text)
def test_no_string_changes_the_meaning_of_a_query(index: Searcher, value: str) -> None:
    key = str(next(_counter))
    vector = EMBEDDER.embed([value])[0]
    tag = metadata_field(PgValue(value, "text"), "tag")
    assert tag is not None or not tag_text(value)
    index.client.hset(
        f"sec:chunk:public.t:{key}:c@1",
        mapping={"content": value, "embedding": vector, "table": "public.t", "pk": key,
                 "chunk": 0, "source": tag or "", "title": value, "n": 1, "lsn": 1},
    )  # fmt: skip
    index.client.hset(f"sec:row:public.t:{key}", "1", ";c@1")  # the row's one version
    if not tag:
        with pytest.raises(ValueError, match="must not be empty"):
            index.search(value, k=50, filters={"source": value})
        return
    hits = index.search(value, k=50, filters={"source": value})
    assert (key,) in [hit.key for hit in hits], f"tag {value!r} did not match itself"
    assert all(hit.metadata["source"] == tag for hit in hits), "tag matched other values"
    index.search(value, k=5, hybrid=True)  # free text: never a syntax error
    try:
        index.search(value, k=5, filters={"title": value, "n": (0, 2)})
    except ValueError as exc:  # a value with no words at all cannot be a text filter
        assert "no words" in str(exc)
    with pytest.raises(ValueError):
        index.search("x", filters={value: "x"} if value not in SPEC.fields else {"n": value})


def test_a_nul_in_a_filter_matches_nothing_and_breaks_nothing(index: Searcher) -> None:
    assert index.search("x", k=5, filters={"source": "\x00"}) == []
    assert index.search("\x00 x", k=5, hybrid=True) is not None


SECRET_PG = "pg-S3cret-pw"
SECRET_REDIS = "redis-S3cret-pw"
SECRET_KEY = "sk-test-S3cretApiKey0123456789"


def test_secrets_never_reach_output_logs_status_or_metrics(
    migrated_dsn: str, redis_url: str, tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    admin = connect(redis_url)
    admin.execute_command("ACL", "SETUSER", "tester", "on", f">{SECRET_REDIS}", "~*", "&*", "+@all")  # type: ignore[no-untyped-call]
    dsn = psycopg.conninfo.make_conninfo(migrated_dsn, password=SECRET_PG)
    url = redis_url.replace("redis://", f"redis://tester:{SECRET_REDIS}@")
    port = free_port()
    settings_ = make_settings(
        dsn,
        url,
        embedding={"provider": "openai", "model": "text-embedding-3-small", "dimensions": 64,
                   "base_url": fake_openai.url, "api_key": SECRET_KEY},
        observability={"metrics_port": port, "metrics_host": "127.0.0.1"},
    )  # fmt: skip
    config = write_config(tmp_path / "connector.toml", settings_)
    log = tmp_path / "connector.log"
    process = spawn(config, log)
    outputs = []
    try:
        insert(migrated_dsn, (1, "secret test", "a row to index"))
        synced(settings_, migrated_dsn, timeout_s=60)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            outputs.append(response.read().decode())
        for args in (("status",), ("status", "--json"), ("verify",), ("search", "row")):
            done = cli(config, *args)
            outputs += [done.stdout, done.stderr]
        bad = write_config(tmp_path / "bad.toml", make_settings(
            psycopg.conninfo.make_conninfo(dsn, port=str(free_port())), url))  # fmt: skip
        done = cli(bad, "status")
        assert done.returncode != 0
        outputs += [done.stdout, done.stderr]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        admin.execute_command("ACL", "DELUSER", "tester")  # type: ignore[no-untyped-call]
        admin.close()
    outputs.append(log.read_text())
    everything = "\n".join(outputs)
    assert "error" in everything.lower() or "connection" in everything.lower()
    for secret in (SECRET_PG, SECRET_REDIS, SECRET_KEY):
        assert secret not in everything


def test_the_migrations_role_is_all_the_connector_needs(
    migrated_dsn: str, redis_url: str, tmp_path: Path
) -> None:
    insert(migrated_dsn, *[(i, f"title {i}", f"existing body {i}") for i in range(1, 20)])
    role_dsn = psycopg.conninfo.make_conninfo(migrated_dsn, user="connector")
    settings_ = make_settings(role_dsn, redis_url, pipeline={"heartbeat_s": 0.2})
    config = write_config(tmp_path / "connector.toml", settings_)
    log = tmp_path / "connector.log"
    process = spawn(config, log)
    try:
        time.sleep(0.5)
        insert(migrated_dsn, (100, "streamed", "after the snapshot"))
        synced(settings_, migrated_dsn, timeout_s=60)
        assert_index_equals_table(settings_, migrated_dsn)
        for args in (("status",), ("verify",), ("resync",), ("search", "streamed")):
            done = cli(config, *args)
            assert done.returncode == 0, f"{args}: {done.stdout} {done.stderr}"
        assert "permission denied" not in log.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log.read_text()


def _chat_keys(server: FakeOpenAI) -> list[str | None]:
    return [r.authorization for r in server.requests if r.path.endswith("/chat/completions")]


def _ask(settings_: Settings) -> None:
    """One chat completion with the client `answer()` uses (no search needed for the key)."""
    answerer = Answerer(settings_)
    try:
        assert "".join(answerer._complete(answerer.prompt("q", "[1] a source"))).startswith("The")
    finally:
        answerer.close()


def test_a_key_goes_only_to_the_host_it_was_configured_for(
    redis_url: str, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    embedding_key, chat_key, env_key = "sk-embedding-key", "sk-chat-key", "sk-env-key"
    monkeypatch.setenv("OPENAI_API_KEY", env_key)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    other = FakeOpenAI().start()  # the chat model on another host than the embeddings
    dsn = "postgresql://nobody@127.0.0.1:1/none"  # never connected to: no search runs
    embedding = {"provider": "openai", "model": "text-embedding-3-small", "dimensions": 64,
                 "base_url": fake_openai.url, "api_key": embedding_key}  # fmt: skip

    def chat(**chat_section: object) -> Settings:
        return make_settings(dsn, redis_url, embedding=embedding, chat=chat_section)

    try:
        # Only chat.base_url set: neither the embedding key nor OPENAI_API_KEY goes there.
        with pytest.raises(ConfigError, match=r"chat\.api_key \(CONNECTOR_CHAT__API_KEY"):
            _ask(chat(base_url=other.url))
        assert _chat_keys(other) == []
        _ask(chat(base_url=other.url, api_key=chat_key))
        assert _chat_keys(other) == [f"Bearer {chat_key}"]
        # The embedding's own host (unset, or the same scheme, host and port): its key.
        _ask(chat())
        _ask(chat(base_url=fake_openai.url.replace("/v1", "/chat/v1")))
        assert _chat_keys(fake_openai) == [f"Bearer {embedding_key}"] * 2
        # OPENAI_API_KEY is for OpenAI's host only, not a server named by embedding.base_url.
        no_key = {**embedding, "api_key": None}
        with pytest.raises(ConfigError, match="OPENAI_API_KEY only for OpenAI's"):
            _ask(make_settings(dsn, redis_url, embedding=no_key))
        hashing = make_settings(dsn, redis_url)
        assert chat_api_key(hashing) == env_key  # no base_url anywhere: OpenAI's host
        openai_host = make_settings(dsn, redis_url, chat={"base_url": "https://api.openai.com/v1"})
        assert chat_api_key(openai_host) == env_key
    finally:
        other.stop()

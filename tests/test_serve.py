"""`connector serve` over real HTTP (uvicorn on loopback, httpx, httpx-sse), against the real
services and a running connector: one test per route, and one per class of bad input."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import psycopg
import pytest
from httpx_sse import connect_sse

from connector.config import Settings
from connector.testing.daemon import DaemonThread
from connector.testing.openai_server import FakeOpenAI
from tests.support import insert, make_settings, serving, synced, wal_lsn

Start = Callable[[Settings], DaemonThread]
TOKEN = "s3cret-token-for-tests"


def _settings(dsn: str, url: str, **sections: dict[str, object]) -> Settings:
    return make_settings(dsn, url, **sections)


@pytest.fixture
def api(migrated_dsn: str, redis_url: str, run_connector: Start) -> Iterator[httpx.Client]:
    settings = _settings(migrated_dsn, redis_url, serve={"min_lsn_timeout_s": 0.5})
    run_connector(settings)
    insert(
        migrated_dsn, *[(n, f"title {n}", f"the body of document number {n}") for n in range(1, 21)]
    )
    synced(settings, migrated_dsn)
    with serving(settings) as client:
        yield client


def test_search_returns_hits_with_the_lsn_they_reflect_and_reads_your_writes(
    api: httpx.Client, migrated_dsn: str
) -> None:
    found = api.post("/v1/search", json={"text": "title 7\n\nthe body of document number 7"})
    assert found.status_code == 200, found.text
    assert found.headers["content-type"] == "application/json"  # encoded by pydantic-core
    body = found.json()
    top = body["hits"][0]
    assert (top["table"], top["key"], top["index"]) == ("public.documents", ["7"], "documents.v1")
    assert top["score"] > 0.95 and "document number 7" in top["content"]
    assert set(top["metadata"]) >= {"source"} and "lsn" in body
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO documents (id, title, body) VALUES (99, 'zebra', 'zebras')")
        lsn = wal_lsn(conn)
    mine = api.post("/v1/search", json={"text": "zebra\n\nzebras", "k": 1, "min_lsn": lsn})
    assert mine.status_code == 200, mine.text
    assert mine.json()["hits"][0]["key"] == ["99"]
    filtered = api.post("/v1/search", json={"text": "document", "k": 50,
                                            "filters": {"source": "unknown"}})  # fmt: skip
    assert filtered.status_code == 200 and len(filtered.json()["hits"]) == 21


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [
        ({"text": "x", "filters": {"colour": "red"}}, 400, "colour"),  # not a field of the index
        ({"text": "x", "k": "many"}, 422, "k"),  # wrong type
        ({"text": "x", "k": 0}, 422, "k"),  # out of range
        ({"text": "x", "k": 101}, 422, "serve.max_k"),
        ({"text": "x" * 5000}, 422, "serve.max_text_chars"),  # oversized
        ({"text": ""}, 422, "text"),
        ({"text": "x", "min_lsn": "yesterday"}, 422, "not an LSN"),
        ({"text": "x", "limit": 3}, 422, "limit"),  # not a field of the request
        ({"text": "x", "index": "nope"}, 422, "unknown index"),
        ({"text": "x", "min_lsn": "FF/0"}, 504, "reached"),  # not reached in time: distinct
    ],
    ids=["unknown-filter", "wrong-type", "k-zero", "k-too-big", "oversized", "empty",
         "bad-lsn", "unknown-field", "unknown-index", "lsn-not-reached"],
)  # fmt: skip
def test_bad_input_gets_a_4xx_that_names_the_field_and_no_traceback(
    api: httpx.Client, body: dict[str, object], status: int, names: str
) -> None:
    response = api.post("/v1/search", json=body)
    assert response.status_code == status, response.text
    assert names in response.json()["error"], response.text
    assert "Traceback" not in response.text


def test_ask_streams_tokens_then_the_sources_with_the_cited_one_marked(
    migrated_dsn: str, redis_url: str, run_connector: Start, fake_openai: FakeOpenAI
) -> None:
    settings = _settings(
        migrated_dsn, redis_url,
        chat={"base_url": fake_openai.url, "api_key": "sk-test-not-a-real-key"},
    )  # fmt: skip
    run_connector(settings)
    insert(migrated_dsn, (1, "otters", "otters hold hands while they sleep"))
    synced(settings, migrated_dsn)
    with serving(settings) as client:
        events = []
        with connect_sse(client, "POST", "/v1/ask", json={"text": "how do otters sleep?"}) as sse:
            assert sse.response.headers["content-type"].startswith("text/event-stream")
            events = [(event.event, event.data) for event in sse.iter_sse()]
    names = [name for name, _data in events]
    assert names[-2:] == ["sources", "done"] and set(names[:-2]) == {"token"}, names
    assert "".join(data for name, data in events if name == "token") == fake_openai.chat_reply
    sources = json.loads(events[-2][1])
    assert sources[0]["key"] == ["1"] and sources[0]["cited"] is True


def test_probes_metrics_and_openapi(api: httpx.Client) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready", ready.text
    assert ready.json()["engine"]["search"] and ready.json()["engine"]["text_scorer"] == "BM25STD"
    api.post("/v1/search", json={"text": "document"})
    api.post("/v1/search", json={"text": "x", "k": 0})
    metrics = api.get("/metrics").text
    assert 'connector_api_requests_total{outcome="200",route="/v1/search"}' in metrics
    assert 'connector_api_requests_total{outcome="422",route="/v1/search"}' in metrics
    assert (
        'connector_api_request_seconds_bucket{le="0.005",outcome="200",route="/v1/search"}'
        in metrics
    )
    assert "connector_api_embedding_seconds_count 1.0" in metrics
    spec = api.get("/openapi.json").json()
    assert {"/v1/search", "/v1/ask", "/v1/index"} <= set(spec["paths"])
    request = spec["components"]["schemas"]["SearchRequest"]
    assert {"text", "k", "filters", "hybrid", "min_lsn", "index"} <= set(request["properties"])
    state = api.get("/v1/index").json()
    assert state["index"] == "documents" and state["physical"] == "documents.v1"
    assert "/" in state["lsn"]


def test_readyz_is_not_ready_without_an_index(migrated_dsn: str, redis_url: str) -> None:
    import redis

    redis.Redis.from_url(redis_url).flushall()
    with serving(_settings(migrated_dsn, redis_url)) as client:
        ready = client.get("/readyz")
    assert ready.status_code == 503 and "not ready" in ready.json()["error"], ready.text


def test_bearer_tokens_cors_and_the_concurrency_bound(
    migrated_dsn: str, redis_url: str, run_connector: Start, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(
        migrated_dsn, redis_url,
        serve={"api_keys": [TOKEN], "cors_origins": ["https://app.example"], "max_concurrency": 1,
               "min_lsn_timeout_s": 2.0},
    )  # fmt: skip
    run_connector(settings)
    synced(settings, migrated_dsn)
    good = {"Authorization": f"Bearer {TOKEN}"}
    with serving(settings) as client:
        assert client.post("/v1/search", json={"text": "x"}).status_code == 401
        wrong = client.post(
            "/v1/search", json={"text": "x"}, headers={"Authorization": "Bearer no"}
        )
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        assert client.post("/v1/search", json={"text": "x"}, headers=good).status_code == 200
        assert client.get("/healthz").status_code == 200  # probes need no token
        cors = client.options("/v1/search", headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})  # fmt: skip
        assert cors.headers["access-control-allow-origin"] == "https://app.example"
        slow = threading.Thread(target=lambda: client.post(
            "/v1/search", json={"text": "x", "min_lsn": "FF/0"}, headers=good))  # fmt: skip
        slow.start()
        time.sleep(0.3)  # it waits for an LSN that never comes: the one slot is taken
        busy = client.post("/v1/search", json={"text": "x"}, headers=good)
        slow.join()
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1", busy.text
    assert TOKEN not in caplog.text

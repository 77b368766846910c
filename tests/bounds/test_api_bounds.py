"""The HTTP API under bad and heavy input, by hand (schemathesis covers the rest:
test_api_schema.py): every refusal is a 4xx `{"error", "field"}` naming the field and the
limit, never a 5xx nor "retry"; the OpenAPI document declares the limits; the probes answer
while every worker is busy; a `min_lsn` wait backs off; an event stream frames any token; the
local model is called by one thread at a time. Over real HTTP (uvicorn on loopback) against the
real services and a running connector."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis
from httpx_sse import connect_sse

from connector.config import Settings
from connector.testing.daemon import DaemonThread
from connector.testing.openai_server import FakeOpenAI
from tests.support import (
    DOCUMENTS,
    assert_index_equals_table,
    insert,
    make_settings,
    serving,
    synced,
)

Start = Callable[[Settings], DaemonThread]
TABLE = {**DOCUMENTS, "metadata": {**DOCUMENTS["metadata"], "title": "text"}}
WORDS = 200  # serve.max_filter_words at its ceiling: Redis must parse a filter of that many
JSON = {"Content-Type": "application/json"}


def _settings(dsn: str, url: str, **sections: dict[str, object]) -> Settings:
    serve = {"max_filter_words": WORDS, "max_filters": 3, "min_lsn_timeout_s": 2.0}
    return make_settings(dsn, url, [TABLE], serve={**serve, **sections.pop("serve", {})},
                         **sections)  # fmt: skip


@pytest.fixture
def synced_settings(migrated_dsn: str, redis_url: str, run_connector: Start) -> Settings:
    settings = _settings(migrated_dsn, redis_url)
    run_connector(settings)
    insert(migrated_dsn, *[(n, f"title {n}", f"the body of document {n}") for n in range(1, 11)])
    synced(settings, migrated_dsn)
    return settings


@pytest.fixture
def api(synced_settings: Settings) -> Iterator[httpx.Client]:
    with serving(synced_settings) as client:
        yield client


def _words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


# (what is sent: a JSON body, or (raw bytes, headers)), the status, words the error names
CASES: list[tuple[str, Any, int, list[str]]] = [
    ("lone surrogate in a tag", (b'{"text": "x", "filters": {"source": "\\ud800"}}', JSON),
     400, ["body", "JSON"]),
    ("lone surrogate in the text", (b'{"text": "\\udc00"}', JSON), 400, ["body"]),
    ("invalid UTF-8", (b'{"text": "\xff\xfe"}', JSON), 400, ["body", "UTF-8"]),
    ("another charset", ('{"text": "caf\u00e9"}'.encode("latin-1"),
                         {"Content-Type": "application/json; charset=latin-1"}),
     415, ["charset", "UTF-8"]),
    ("nested 1,000 deep", (b'{"text": "x", "filters": {"source": ' + b"[" * 1000 + b"]" * 1000
                           + b"}}", JSON), 400, ["body", "nested"]),
    ("not JSON", (b"text=x", JSON), 400, ["body", "JSON"]),
    ("no Content-Type", (b'{"text": "x"}', {}), 415, ["Content-Type", "application/json"]),
    ("a form", (b"text=x", {"Content-Type": "application/x-www-form-urlencoded"}), 415,
     ["Content-Type", "application/json"]),
    ("not an object", [1, 2], 422, ["body", "object"]),
    ("k true", {"text": "x", "k": True}, 422, ["k", "integer"]),
    ("k as text", {"text": "x", "k": "5"}, 422, ["k", "integer"]),
    ("k fractional", {"text": "x", "k": 2.5}, 422, ["k", "integer"]),
    ("hybrid 0", {"text": "x", "hybrid": 0}, 422, ["hybrid", "boolean"]),
    ("text as a number", {"text": 5}, 422, ["text", "string"]),
    ("NaN", (b'{"text": "x", "filters": {"updated_at": NaN}}', JSON), 422,
     ["filters.updated_at", "number"]),
    ("Infinity in a range", (b'{"text": "x", "filters": {"updated_at": {"min": -Infinity}}}',
                             JSON), 422, ["filters.updated_at", "finite"]),
    ("1e400", (b'{"text": "x", "filters": {"updated_at": 1e400}}', JSON), 422,
     ["filters.updated_at"]),
    ("an integer past 1e308", (b'{"text": "x", "filters": {"updated_at": 1' + b"0" * 308
                               + b"1}}", JSON), 422, ["filters.updated_at", "1e308"]),
    ("a number as text on a numeric field", {"text": "x", "filters": {"updated_at": "5"}}, 422,
     ["filters.updated_at", "numeric field takes a number"]),
    ("a range with another key", {"text": "x", "filters": {"updated_at": {"low": 1}}}, 422,
     ["filters.updated_at", "min"]),
    ("text filter too long", {"text": "x", "filters": {"title": _words(WORDS + 1)}}, 422,
     ["filters.title", f"at most {WORDS}", "serve.max_filter_words"]),
    ("text filter of 400 words", {"text": "x", "filters": {"title": _words(400)}}, 422,
     ["filters.title", "400 words", "serve.max_filter_words"]),
    ("text filter with no word", {"text": "x", "filters": {"title": "!!"}}, 422,
     ["filters.title", "no words"]),
    ("a blank tag", {"text": "x", "filters": {"source": " \x1f "}}, 422, ["filters.source"]),
    ("an empty tag list", {"text": "x", "filters": {"tags": []}}, 422, ["filters.tags"]),
    ("too many tags", {"text": "x", "filters": {"tags": [f"t{i}" for i in range(101)]}}, 422,
     ["filters.tags", "100", "serve.max_filter_values"]),
    ("too many filters", {"text": "x", "filters": {"source": "a", "tags": "b", "title": "c",
                                                   "updated_at": 1}},
     422, ["filters", "at most 3", "serve.max_filters"]),
    ("a range on a tag field", {"text": "x", "filters": {"source": {"min": 1}}}, 400,
     ["filters.source", "range"]),
    ("a field the index does not have", {"text": "x", "filters": {"colour": "red"}}, 400,
     ["colour", "metadata fields"]),
    ("k over serve.max_k", {"text": "x", "k": 101}, 422, ["k", "100", "serve.max_k"]),
    ("text over serve.max_text_chars", {"text": "x" * 4001}, 422,
     ["text", "4000", "serve.max_text_chars"]),
    ("an unknown index", {"text": "x", "index": "nope"}, 422, ["index", "unknown index"]),
    ("a bad LSN", {"text": "x", "min_lsn": "0/XYZ"}, 422, ["min_lsn", "not an LSN"]),
    ("an unknown field", {"text": "x", "limit": 3}, 422, ["limit", "not a field"]),
    ("a huge tag list", {"text": "x", "filters": {"tags": ["t"] * 1_000_000}}, 413,
     ["body", "262144", "serve.max_body_bytes"]),
]  # fmt: skip


def _send(api: httpx.Client, path: str, sent: Any) -> httpx.Response:
    if isinstance(sent, tuple):
        content, headers = sent
        return api.post(path, content=content, headers=headers)
    return api.post(path, content=json.dumps(sent).encode(), headers=JSON)


def _wrong(response: httpx.Response, status: int, names: list[str]) -> str | None:
    """What is wrong with a refusal (None: a `status` in the documented shape naming all of
    `names`, and no "retry")."""
    try:
        body = response.json()
    except ValueError:
        return f"not JSON: {response.text[:200]}"
    if response.status_code != status or set(body) - {"error", "field"} or "error" not in body:
        return f"{response.status_code} {body}"
    missing = [name for name in names if name not in body["error"]]
    if missing or "retry" in body["error"].lower():
        return f"{body} does not name {missing}"
    return None


def test_every_bad_request_is_a_4xx_in_the_documented_shape_naming_the_field_and_limit(
    api: httpx.Client, synced_settings: Settings, migrated_dsn: str
) -> None:
    wrong = {}
    for path in ("/v1/search", "/v1/ask"):
        for name, sent, status, names in CASES:
            problem = _wrong(_send(api, path, sent), status, names)
            if problem:
                wrong[f"{path} {name}"] = problem
    assert not wrong, json.dumps(wrong, indent=1)
    fine = api.post("/v1/search", json={"text": "x", "k": 5.0, "filters": {"title": _words(WORDS),
                    "tags": [f"t{i}" for i in range(100)], "updated_at": {"min": 0}}})  # fmt: skip
    assert fine.status_code == 200, fine.text  # at every limit: accepted, and Redis parses it
    chunked = api.post("/v1/search", content=iter([b'{"text": "', b"x" * 300_000, b'"}']),
                       headers=JSON)  # fmt: skip
    assert _wrong(chunked, 413, ["serve.max_body_bytes"]) is None, chunked.text
    for response, status in ((api.get("/nowhere"), 404), (api.delete("/v1/search"), 405)):
        assert _wrong(response, status, []) is None, response.text
    assert_index_equals_table(synced_settings, migrated_dsn)


def test_the_openapi_document_declares_the_limits_the_server_enforces(api: httpx.Client) -> None:
    spec = api.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    request = schemas["SearchRequest"]["properties"]
    assert request["k"]["maximum"] == 100 and request["k"]["minimum"] == 1
    assert request["text"]["maxLength"] == 4000
    assert request["min_lsn"]["anyOf"][0]["pattern"] == "^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$"
    assert request["index"]["anyOf"][0]["const"] == "documents"
    filters = schemas["Filters"]
    assert filters["maxProperties"] == 3 and filters["additionalProperties"] is False
    assert set(filters["properties"]) == {"source", "tags", "updated_at", "title"}
    tag_list = [t for t in filters["properties"]["tags"]["anyOf"] if t.get("type") == "array"]
    assert tag_list[0]["maxItems"] == 100
    assert "200" in filters["description"] and "serve.max_filter_words" in filters["description"]
    search = spec["paths"]["/v1/search"]["post"]
    assert "262144 bytes" in search["requestBody"]["description"]
    assert {"400", "413", "415", "422", "503", "504"} <= set(search["responses"])
    problem = search["responses"]["422"]["content"]["application/json"]["schema"]["$ref"]
    assert set(schemas[problem.rpartition("/")[2]]["properties"]) == {"error", "field"}
    metrics = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
    assert api.get("/metrics").headers["content-type"].startswith("text/plain")


def test_probes_answer_while_every_worker_waits_and_waits_back_off(
    synced_settings: Settings, redis_url: str
) -> None:
    settings = synced_settings  # max_concurrency 64 (more than anyio's 40 worker threads)
    slow = {"text": "x", "min_lsn": "FF/0"}  # never reached: each waits 2 s
    with serving(settings) as client, ThreadPoolExecutor(64) as pool:
        waits = [pool.submit(client.post, "/v1/search", json=slow) for _ in range(64)]
        time.sleep(0.5)  # every slot and worker taken
        busy = client.post("/v1/search", json={"text": "x"})
        answered = {}
        for path in ("/healthz", "/readyz", "/metrics"):
            began = time.monotonic()
            response = client.get(path, timeout=1.0)
            answered[path] = (response.status_code, round(time.monotonic() - began, 3))
        statuses = [wait.result().status_code for wait in waits]
        stats = redis.Redis.from_url(redis_url)
        before = stats.info("commandstats")["cmdstat_hmget"]["calls"]
        alone = client.post("/v1/search", json=slow)
        calls = stats.info("commandstats")["cmdstat_hmget"]["calls"] - before
    assert all(status == 200 for status, _took in answered.values()), answered
    assert busy.status_code == 503 and "serve.max_concurrency" in busy.json()["error"], busy.text
    assert statuses == [504] * 64 and alone.status_code == 504, (statuses, alone.text)
    # A wait of 2 s: polling every millisecond is ~1,800 HMGETs; backing off, ~160.
    assert calls < 400, calls


def test_an_event_stream_frames_tokens_holding_any_line_break(
    migrated_dsn: str, redis_url: str, run_connector: Start, fake_openai: FakeOpenAI
) -> None:
    chat = {"base_url": fake_openai.url, "api_key": "sk-test-not-a-real-key"}
    settings = _settings(migrated_dsn, redis_url, chat=chat)
    run_connector(settings)
    insert(migrated_dsn, (1, "otters", "otters hold hands while they sleep"))
    synced(settings, migrated_dsn)
    fake_openai.chat_reply = "one\rtwo\r\nthree\nfour\r\rfive"  # one token: the fake splits on " "
    with (
        serving(settings) as client,
        connect_sse(client, "POST", "/v1/ask", json={"text": "otters"}) as sse,
    ):
        events = [(event.event, event.data) for event in sse.iter_sse()]
    names = [name for name, _data in events]
    assert names == ["token", "sources", "done"], events
    assert events[0][1] == "one\ntwo\nthree\nfour\n\nfive"  # SSE lines join with LF
    assert json.loads(events[1][1])[0]["key"] == ["1"]
    assert_index_equals_table(settings, migrated_dsn)


@pytest.mark.local_model
def test_the_local_model_is_called_by_one_thread_at_a_time() -> None:
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            raise  # CI installs the local extra: this test must run there
        pytest.skip("the local extra is not installed")
    from connector.config import EmbeddingSettings
    from connector.embed.local import LocalEmbedder

    embedder = LocalEmbedder(EmbeddingSettings(provider="local", dimensions=384))
    model = embedder._model
    inside, most, lock = [0], [0], threading.Lock()

    class Counting:
        """The real model, counting the threads inside `encode` at once."""

        def encode(self, *args: Any, **kwargs: Any) -> Any:
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            try:
                time.sleep(0.01)  # widen the window two unguarded calls would share
                return model.encode(*args, **kwargs)
            finally:
                with lock:
                    inside[0] -= 1

    texts = [f"question number {n} about otters" for n in range(32)]
    alone = [embedder.embed([text])[0] for text in texts]
    embedder._model = Counting()
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda text: embedder.embed([text])[0], texts))
    assert most[0] == 1, f"{most[0]} threads were inside the model at once"
    assert together == alone
    embedder._model = model
    embedder.close()

"""The vector index users can tune ([tables.vector]): every option reaches FT.INFO as
configured, vectors are written and queried in the configured type, scores follow the
configured distance, and what the server or the index cannot do is refused at start."""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import Any

import pytest

from connector.config import Settings
from connector.core.vectors import width
from connector.embed import HashingEmbedder
from connector.errors import ConfigError
from connector.flow.targets import prepare
from connector.sink.redis_client import command, connect
from connector.sink.schema import describe_vector, vector_args
from connector.testing.config import DOCUMENTS
from connector.testing.daemon import DaemonThread
from tests.support import insert, make_settings, synced

Start = Callable[[Settings], DaemonThread]


def _settings(dsn: str, url: str, **vector: object) -> Settings:
    return make_settings(dsn, url, tables=[dict(DOCUMENTS, vector=vector)])


def _vector_attribute(client: Any, index: str) -> dict[str, str]:
    """The `embedding` attribute of FT.INFO, keys lower-cased, values as text."""
    info = command(client, "FT.INFO", index)
    for attribute in info[b"attributes"]:
        if isinstance(attribute, dict):
            fields = {k.decode().lower(): v for k, v in attribute.items()}
        else:  # a flat list: name, value, ...
            fields = {
                str(k.decode() if isinstance(k, bytes) else k).lower(): v
                for k, v in zip(attribute[::2], attribute[1::2], strict=True)
            }
        if fields.get("identifier") == b"embedding":
            return {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in fields.items()}
    raise AssertionError(f"no embedding attribute in FT.INFO: {info}")


@pytest.mark.parametrize(
    ("vector", "expected"),
    [
        (
            {"type": "float16", "distance": "ip", "m": 40, "ef_construction": 250,
             "ef_runtime": 64, "epsilon": 0.02, "initial_cap": 5000},
            {"algorithm": "HNSW", "data_type": "FLOAT16", "distance_metric": "IP", "m": "40",
             "ef_construction": "250"},
        ),
        (
            {"algorithm": "flat", "type": "bfloat16", "distance": "l2"},
            {"algorithm": "FLAT", "data_type": "BFLOAT16", "distance_metric": "L2"},
        ),
    ],
)  # fmt: skip
def test_every_vector_option_reaches_the_index_and_search_uses_it(
    migrated_dsn: str,
    redis_url: str,
    run_connector: Start,
    vector: dict[str, object],
    expected: dict[str, str],
) -> None:
    settings = _settings(migrated_dsn, redis_url, **vector)
    run_connector(settings)
    insert(
        migrated_dsn, *[(n, f"title {n}", f"the body of document number {n}") for n in range(20)]
    )
    found = synced(settings, migrated_dsn)
    client = connect(redis_url)
    attribute = _vector_attribute(client, "documents")
    assert {name: attribute.get(name) for name in expected} == expected, attribute
    assert attribute.get("dim") == "256"
    # FT.INFO (RediSearch 2.10) does not show EF_RUNTIME, EPSILON or INITIAL_CAP: the index's
    # record of its options does, and so does what FT.CREATE was sent (it refuses bad ones).
    recorded = client.hget("documents:meta", "vector")
    assert recorded is not None and recorded.decode() == describe_vector(settings.tables[0].vector)
    created = vector_args(settings.tables[0].vector, 256)
    for name in ("EF_RUNTIME", "EPSILON", "INITIAL_CAP"):
        option = name.lower()
        if option in vector:
            assert created[created.index(name) + 1] == str(vector[option])
    # Every stored vector is in the configured type.
    keys = list(client.scan_iter(match="documents:chunk:*", count=1000))
    stored = {len(client.hget(key, "embedding") or b"") for key in keys}
    assert stored == {256 * width(settings.tables[0].vector.type)}
    # A row's own text finds it first, with the score its distance defines.
    hits = found.search("title 7\n\nthe body of document number 7", k=3, ef_runtime=50)
    assert hits[0].key == ("7",), hits
    assert 0.98 <= hits[0].score <= 1.02  # same text: cosine/ip ~1, l2 1/(1+0)
    assert all(a.score >= b.score for a, b in pairwise(hits))
    client.close()


def test_an_integer_vector_type_is_refused_on_an_older_server(redis_url: str) -> None:
    client = connect(redis_url)
    client.flushall()
    settings = _settings("postgresql://unused", redis_url, type="int8")
    with pytest.raises(ConfigError, match=r"vector.type = int8 needs RediSearch 8.0 or later"):
        prepare(client, settings, HashingEmbedder(256), auto=False)
    client.close()


def test_an_index_built_with_other_vector_options_is_refused_with_the_fix(
    redis_url: str,
) -> None:
    client = connect(redis_url)
    client.flushall()
    built = _settings("postgresql://unused", redis_url, type="float16")
    prepare(client, built, HashingEmbedder(256), auto=False)
    changed = _settings("postgresql://unused", redis_url, type="float32", m=40)
    with pytest.raises(
        ConfigError,
        match=r"index documents was built with other settings than these \(vector "
        r"'hnsw float16 cosine' -> 'hnsw float32 cosine m=40'\): run `connector reindex "
        r"--table public.documents`",
    ):
        prepare(client, changed, HashingEmbedder(256), auto=False)
    client.close()

"""The engine profile's pure decisions (core.engine) and the search replies that carry warnings
(core.replies): no servers."""

from __future__ import annotations

import pytest

from connector.core.engine import (
    EngineProfile,
    check_client,
    integer_vectors,
    modules_in_info,
    modules_listed,
    version_text,
)
from connector.core.replies import check_complete, reply_warnings
from connector.errors import ConfigError, IncompleteAnswer


def test_redis_py_8_0_0_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError) as refused:
        check_client("8.0.0")
    assert "redis-py 8.0.0" in str(refused.value)
    assert "pip install 'redis!=8.0.0'" in str(refused.value)
    for fine in ("7.0.1", "7.4.0", "8.0.1", "8.1.0", "8.2.0"):
        check_client(fine)


def test_module_versions_read_as_text() -> None:
    listed = [
        {b"name": b"search", b"ver": 21005, b"path": b"/x/redisearch.so"},
        {b"name": b"ReJSON", b"ver": 20803},
        {b"name": b"vectorset", b"ver": 1},
        {b"name": b"timeseries", b"ver": 80400},
    ]
    assert modules_listed(listed) == {"search": "2.10.5", "json": "2.8.3", "vectorset": "1"}
    assert version_text(80400) == "8.4.0"
    info = {"modules": [{"name": "search", "ver": 80200}], "search_version": "8.2.1"}
    assert modules_in_info(info) == {"search": "8.2.1"}  # search_version is the precise one


def test_what_a_search_version_does() -> None:
    assert EngineProfile("7.4.1", "2.10.5").default_scorer == "TFIDF"
    assert EngineProfile("8.4.0", "8.4.0").default_scorer == "BM25STD"
    assert EngineProfile("", "").default_scorer == ""  # unknown
    assert not integer_vectors("2.10.5") and integer_vectors("8.0.0") and integer_vectors("")
    shown = EngineProfile("7.4.1", "2.10.5", "2.8.3", None, "MODULE LIST").as_dict()
    assert shown["text_scorer"] == "BM25STD" and shown["default_scorer"] == "TFIDF"
    assert "NO search module" in EngineProfile("7.4.1").describe()


TIMEOUT = b"Timeout limit was reached"
OOM = b"Shard failed to execute the query due to insufficient memory"


def test_a_reply_with_a_warning_is_refused_naming_the_setting() -> None:
    complete = {b"total_results": 3, b"results": [], b"warning": []}
    check_complete(complete)
    check_complete([3, b"key"])  # RESP2 carries no warnings (the connector speaks RESP3)
    with pytest.raises(IncompleteAnswer, match=r"FT\.CONFIG SET TIMEOUT .*search-timeout"):
        check_complete({**complete, b"warning": [TIMEOUT]})
    with pytest.raises(IncompleteAnswer, match=r"search-on-oom.*maxmemory"):
        check_complete({b"total_results": 0, b"results": [], b"warning": [OOM]})
    with pytest.raises(IncompleteAnswer, match="'something new'"):
        check_complete({**complete, b"warning": [b"something new"]})
    assert reply_warnings({"warning": ["x"]}) == ["x"]

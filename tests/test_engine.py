"""The engine profile against the real Redis Stack: the server's and modules' versions are read
(also where MODULE LIST or INFO is refused) and shown by `connector status`, the daemon's log
and metrics; the BM25 leg the searcher sends names its scorer; and a reply that carries a
warning (RediSearch's query timeout with ON_TIMEOUT RETURN) is never handed back as a complete
answer."""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import redis

from connector.config import Settings
from connector.core.engine import TEXT_SCORER
from connector.errors import IncompleteAnswer
from connector.sink.engine import read_profile
from connector.sink.redis_client import command, connect
from connector.testing.config import write_config
from connector.testing.daemon import DaemonThread
from tests.support import DOCUMENTS, cli, insert, make_settings, synced

Start = Callable[..., DaemonThread]
VOCABULARY = [f"{a}{b}" for a in ("alpha", "bravo", "delta", "gamma") for b in range(100)]
# A FLAT index of wide vectors: its KNN compares the question with every row, about 4 ms here
# (measured: past a 1 ms timeout RediSearch returns 1 of 20 hits, with a warning).
ROWS, DIMENSIONS = 4000, 1536


def _server_versions(url: str) -> tuple[str, str]:
    client = redis.Redis.from_url(url, protocol=3)
    try:
        return client.info("server")["redis_version"], client.info("modules")["search_version"]
    finally:
        client.close()


def test_status_and_the_daemon_show_the_servers_versions(
    migrated_dsn: str, redis_url: str, run_connector: Start, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    server, search = _server_versions(redis_url)
    settings = make_settings(migrated_dsn, redis_url)
    with caplog.at_level(logging.INFO, logger="connector.flow.daemon"):
        running = run_connector(settings, probes=True)
    config = write_config(tmp_path / "connector.toml", settings)
    shown = json.loads(cli(config, "status", "--json").stdout)["engine"]
    assert shown["redis"] == server and shown["search"] == search
    assert shown["json"] and shown["read_from"] == "MODULE LIST"
    assert shown["text_scorer"] == TEXT_SCORER == "BM25STD"
    assert shown["default_scorer"] == ("BM25STD" if int(search.split(".")[0]) >= 8 else "TFIDF")
    human = cli(config, "status").stdout
    assert f"Redis {server}, search {search}" in human, human
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Redis: ")]
    assert len(said) == 1 and f"search {search}" in said[0], said  # once, at start
    _, metrics = running.probe("/metrics")
    assert f'search="{search}"' in metrics and f'redis="{server}"' in metrics


@contextmanager
def _user(url: str, name: str, *rules: str) -> Iterator[redis.Redis]:
    """A client for an ACL user with `rules` (what a managed service allows), dropped after."""
    admin = connect(url)
    admin.acl_setuser(name, enabled=True, passwords=["+secret"], keys=["~*"], channels=["&*"],
                      commands=["+@all", *rules], reset=True)  # fmt: skip
    host = url.removeprefix("redis://")
    client = connect(f"redis://{name}:secret@{host}")
    try:
        yield client
    finally:
        client.close()
        admin.acl_deluser(name)
        admin.close()


def test_a_server_that_refuses_module_list_or_info_is_still_profiled(redis_url: str) -> None:
    server, search = _server_versions(redis_url)
    with _user(redis_url, "no_module", "-module") as client:
        seen = read_profile(client)
        assert (seen.redis, seen.search, seen.read_from) == (server, search, "INFO modules")
    with _user(redis_url, "no_module_no_info", "-module", "-info") as client:
        seen = read_profile(client)
        assert (seen.redis, seen.search, seen.read_from) == ("", "", "FT._LIST")
        assert "Redis version unknown, search version unknown" in seen.describe()


def _filled(dsn: str, url: str, run: Start) -> Settings:
    """A synced FLAT index of ROWS rows of 40 words of the vocabulary, vectors of DIMENSIONS."""
    table = {**DOCUMENTS, "vector": {"algorithm": "flat"}}
    settings = make_settings(dsn, url, [table], embedding={"dimensions": DIMENSIONS})
    run(settings)
    rng = random.Random(7)
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO documents (id, title, body) VALUES (%s, %s, %s)",
            [(i, "t", " ".join(rng.choices(VOCABULARY, k=40))) for i in range(ROWS)],
        )
    synced(settings, dsn, timeout_s=120)
    return settings


def test_the_bm25_leg_names_its_scorer(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    settings = make_settings(migrated_dsn, redis_url)
    run_connector(settings)
    insert(migrated_dsn, (1, "scorer", "alpha1 alpha2 alpha3"), (2, "other", "alpha1 bravo2"))
    found = synced(settings, migrated_dsn)
    watching = connect(redis_url)
    sent: list[str] = []
    with watching.monitor() as monitor:  # type: ignore[no-untyped-call]
        listening = threading.Thread(target=_listen, args=(monitor, sent), daemon=True)
        listening.start()
        hits = found.search("alpha1 alpha2", k=2, hybrid=True)
        found.client.execute_command("ECHO", "done")  # type: ignore[no-untyped-call]
        listening.join(10)
    assert hits[0].key == ("1",)
    # Each BM25 leg names the scorer, whether sent as it is or inside the search's script.
    legs = sum(line.count("@content:(") for line in sent)
    assert legs, sent
    assert sum(line.count(f"SCORER {TEXT_SCORER}") for line in sent) == legs, sent


def _listen(monitor: redis.client.Monitor, sent: list[str]) -> None:
    for seen in monitor.listen():  # type: ignore[no-untyped-call]
        sent.append(seen["command"] if "command" in seen else str(seen))
        if sent[-1] == "ECHO done":
            return


@contextmanager
def _query_timeout(url: str, timeout_ms: int) -> Iterator[None]:
    """RediSearch's query TIMEOUT set to `timeout_ms` with ON_TIMEOUT RETURN (partial results
    with a warning), both restored after."""
    client = connect(url)
    before = {name: _config(client, name) for name in ("TIMEOUT", "ON_TIMEOUT")}
    command(client, "FT.CONFIG", "SET", "TIMEOUT", str(timeout_ms))
    command(client, "FT.CONFIG", "SET", "ON_TIMEOUT", "RETURN")
    try:
        yield
    finally:
        for name, value in before.items():
            command(client, "FT.CONFIG", "SET", name, value)
        client.close()


def _config(client: redis.Redis, name: str) -> bytes:
    reply = command(client, "FT.CONFIG", "GET", name)  # RESP3: a map; RESP2: pairs
    return bytes(reply[name.encode()] if isinstance(reply, dict) else reply[0][1])


def test_a_search_past_the_query_timeout_is_never_a_complete_answer(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    settings = _filled(migrated_dsn, redis_url, run_connector)
    found = synced(settings, migrated_dsn)
    question = " ".join(VOCABULARY[::4])
    for hybrid in (False, True):
        complete = found.search(question, k=10, hybrid=hybrid)
        assert len(complete) == 10
        with _query_timeout(redis_url, 1), pytest.raises(IncompleteAnswer) as refused:
            found.search(question, k=10, hybrid=hybrid)
        message = str(refused.value)
        assert "Timeout limit was reached" in message and "FT.CONFIG SET TIMEOUT" in message
        assert "search-timeout" in message  # the Redis 8 name of the setting
        again = found.search(question, k=10, hybrid=hybrid)  # the timeout restored
        assert [hit.key for hit in again] == [hit.key for hit in complete]

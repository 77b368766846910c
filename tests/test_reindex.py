"""Rebuilds behind an alias: a model change rebuilt at start (`reindex.auto`) while searches run,
a SIGKILL in the middle of a rebuild, `connector reindex` next to a running connector (its plan,
vectors reused), and a metadata column added in place, without a rebuild."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from connector.config import Settings
from connector.query.searcher import searcher
from connector.sink.layout import Record, read_record
from connector.sink.redis_client import command, connect
from connector.sink.schema import describe_vector
from connector.testing.config import write_config
from connector.testing.daemon import DaemonProcess, DaemonThread
from connector.testing.openai_server import FakeOpenAI
from tests.support import (
    DOCUMENTS,
    assert_index_equals_table,
    cli,
    insert,
    make_settings,
    openai_settings,
    synced,
)

Start = Callable[[Settings], DaemonThread]


def _bulk(dsn: str, first: int, last: int, source: str = "bulk") -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO documents (id, title, body, source) SELECT i, 'title ' || i, "
            "'the body of document number ' || i, %s FROM generate_series(%s::int, %s::int) i",
            (source, first, last),
        )


def _record(client: redis.Redis) -> Record:
    record = read_record(client, "documents")
    assert record is not None
    return record


def _wait(what: str, done: Callable[[], bool], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _switched_and_dropped(client: redis.Redis, name: str) -> Callable[[], bool]:
    def done() -> bool:
        record = _record(client)
        return record.current.name == name and record.retiring is None

    return done


def _built_then_changed(
    dsn: str, url: str, run_connector: Start, rows: int, **changed: dict[str, object]
) -> tuple[Settings, Settings]:
    """`rows` rows indexed with the default settings (then the connector stopped), and the
    settings changed by `changed` sections, with `reindex.auto` on."""
    old = make_settings(dsn, url, pipeline={"gc_grace_s": 0.5})
    sections: dict[str, Any] = {
        "pipeline": {"gc_grace_s": 0.5, "batch_max_rows": 100}, "reindex": {"auto": True},
        **changed,
    }  # fmt: skip
    running = run_connector(old)
    _bulk(dsn, 1, rows)
    synced(old, dsn)
    running.stop()
    return old, make_settings(dsn, url, **sections)


def _only_index(client: redis.Redis, name: str) -> None:
    assert command(client, "FT._LIST") == [name.encode()]
    assert not list(client.scan_iter(match="documents:*", count=1000)), "old keys remain"


@pytest.mark.parametrize(
    ("embedding", "vector"),
    [({"dimensions": 128}, {}), ({}, {"distance": "ip"})],
    ids=["dimensions", "distance"],  # a query of the old model fails / runs on the new index
)
def test_a_model_change_with_reindex_auto_switches_while_searches_run(
    migrated_dsn: str,
    redis_url: str,
    run_connector: Start,
    embedding: dict[str, object],
    vector: dict[str, object],
) -> None:
    old, new = _built_then_changed(
        migrated_dsn, redis_url, run_connector, 1500, embedding=embedding,
        tables=[dict(DOCUMENTS, vector=vector)],
    )  # fmt: skip
    client = connect(redis_url)
    answers: list[set[str]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def search() -> None:  # the application: its settings still name the old model
        found = searcher(old)
        while not stop.is_set():
            try:
                hits = found.search("the body of document number 7", k=5)
            except Exception as exc:
                errors.append(exc)
            else:
                answers.append({hit.index for hit in hits})

    thread = threading.Thread(target=search)
    thread.start()
    try:
        run_connector(new)
        _wait("the rebuild to start", lambda: _record(client).building is not None)
        with psycopg.connect(migrated_dsn, autocommit=True) as conn:  # changes during the copy
            conn.execute("UPDATE documents SET body = 'changed while rebuilding' WHERE id <= 50")
            conn.execute("DELETE FROM documents WHERE id BETWEEN 51 AND 80")
        _bulk(migrated_dsn, 1501, 1600)
        _wait("the switch", _switched_and_dropped(client, "documents.v2"))
        _bulk(migrated_dsn, 1601, 1650)  # after it: the new index alone
        synced(new, migrated_dsn)
        _wait(
            "1,000 searches",
            lambda: (len(answers) >= 1000 and "documents.v2" in answers[-1]) or len(errors) > 100,
        )
    finally:
        stop.set()
        thread.join(30)
    assert not errors, [repr(e) for e in errors[:3]]
    assert all(len(indexes) == 1 for indexes in answers), "an answer mixed two indexes"
    order = [next(iter(indexes)) for indexes in answers]
    first_new = order.index("documents.v2")
    assert order[0] == "documents.v1" and set(order[first_new:]) == {"documents.v2"}
    assert_index_equals_table(new, migrated_dsn)
    meta = {k.decode(): v.decode() for k, v in client.hgetall("documents.v2:meta").items()}
    assert meta["dimensions"] == str(new.embedding.dimensions)
    assert meta["vector"] == describe_vector(new.tables[0].vector)
    _only_index(client, "documents.v2")
    client.close()


def test_a_sigkill_during_a_rebuild_leaves_the_old_index_serving_and_the_restart_completes(
    migrated_dsn: str, redis_url: str, run_connector: Start, tmp_path: Path
) -> None:
    old, new = _built_then_changed(
        migrated_dsn, redis_url, run_connector, 4000, embedding={"dimensions": 128}
    )
    client = connect(redis_url)
    daemon = DaemonProcess.for_settings(new, tmp_path).start()
    try:
        _wait("the copy to be under way", lambda: _record(client).rows_done > 0, 60)
        daemon.kill()
        record = _record(client)
        assert record.building is not None and record.current.name == "documents.v1"
        hits = searcher(old).search("the body of document number 7", k=3)
        assert hits and {hit.index for hit in hits} == {"documents.v1"}  # the old one serves
        status = cli(write_config(tmp_path / "status.toml", new), "status")
        assert "rebuilding into documents.v2" in status.stdout, status.stdout + status.stderr
        _bulk(migrated_dsn, 4001, 4100)
        daemon.start()
        _wait("the switch after the restart", _switched_and_dropped(client, "documents.v2"))
        synced(new, migrated_dsn)
    finally:
        daemon.stop()
    assert_index_equals_table(new, migrated_dsn)
    _only_index(client, "documents.v2")
    client.close()


def test_connector_reindex_next_to_a_running_connector_reuses_every_vector(
    migrated_dsn: str, redis_url: str, run_connector: Start, fake_openai: FakeOpenAI,
    tmp_path: Path,
) -> None:  # fmt: skip
    embedding = openai_settings(fake_openai, cache=False)  # no cache: the old index's vectors
    old = make_settings(migrated_dsn, redis_url, embedding=embedding,
                        pipeline={"gc_grace_s": 0.5})  # fmt: skip
    new = make_settings(
        migrated_dsn, redis_url, tables=[dict(DOCUMENTS, vector={"type": "float16", "m": 24})],
        embedding=embedding, pipeline={"gc_grace_s": 0.5},
    )  # fmt: skip
    client = connect(redis_url)
    run_connector(old)  # it keeps running with the old settings throughout
    _bulk(migrated_dsn, 1, 300)
    synced(old, migrated_dsn)
    config = write_config(tmp_path / "new.toml", new)
    dry = cli(config, "reindex", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    for said in (
        "rebuild documents.v1 -> documents.v2",
        "vector 'hnsw float32 cosine' -> 'hnsw float16 cosine m=24'",
        "rows to copy: 300",
        "reused from documents.v1 (same model)",
        "memory: about",
    ):
        assert said in dry.stdout, dry.stdout  # fmt: skip
    assert _record(client).building is None, "a dry run changed something"
    requests = len(fake_openai.embedding_inputs())
    done = cli(config, "reindex")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "index documents now answers from documents.v2" in done.stdout, done.stdout
    assert len(fake_openai.embedding_inputs()) == requests, "a rebuild of the same model embedded"
    info = command(client, "FT.INFO", "documents")
    assert info[b"index_name"] == b"documents.v2"
    _bulk(migrated_dsn, 301, 320)  # the running connector now writes the new index
    insert(migrated_dsn, (321, "zebra", "zebra crossings in winter snow"))
    _wait("the old index to be dropped", _switched_and_dropped(client, "documents.v2"))
    found = synced(new, migrated_dsn)
    hits = found.search("zebra crossings in winter snow", k=3)
    assert hits[0].key == ("321",) and hits[0].index == "documents.v2", hits
    assert_index_equals_table(new, migrated_dsn)
    _only_index(client, "documents.v2")
    client.close()


def test_a_metadata_column_added_is_filterable_for_old_and_new_rows_without_a_rebuild(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    without = dict(DOCUMENTS, metadata={"tags": "tag", "updated_at": "numeric"})
    old = make_settings(migrated_dsn, redis_url, tables=[without])
    new = make_settings(migrated_dsn, redis_url)  # DOCUMENTS: `source` is a tag field
    client = connect(redis_url)
    running = run_connector(old)
    _bulk(migrated_dsn, 1, 40, source="alpha")
    synced(old, migrated_dsn)
    running.stop()
    run_connector(new)  # reindex.auto is off: a rebuild would be refused
    _bulk(migrated_dsn, 41, 50, source="beta")
    _wait("the back-fill", lambda: not _record(client).backfill, 60)
    found = synced(new, migrated_dsn)
    alpha = found.search("the body of document", k=100, filters={"source": "alpha"})
    beta = found.search("the body of document", k=100, filters={"source": "beta"})
    assert sorted(int(h.key[0]) for h in alpha) == list(range(1, 41))
    assert sorted(int(h.key[0]) for h in beta) == list(range(41, 51))
    record = _record(client)
    assert (record.current.name, record.serial, record.building) == ("documents.v1", 1, None)
    assert_index_equals_table(new, migrated_dsn)
    client.close()


def test_connector_reindex_refuses_a_rebuild_redis_has_no_memory_for(
    migrated_dsn: str, redis_url: str, run_connector: Start, tmp_path: Path
) -> None:
    old = make_settings(migrated_dsn, redis_url)
    new = make_settings(migrated_dsn, redis_url, embedding={"dimensions": 512})
    client = connect(redis_url)
    run_connector(old)
    _bulk(migrated_dsn, 1, 500)
    synced(old, migrated_dsn)
    config = write_config(tmp_path / "new.toml", new)
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", used + (1 << 20))  # 1 MB of room: far less than a copy
    try:
        refused = cli(config, "reindex")
    finally:
        client.config_set("maxmemory", 0)
    assert refused.returncode != 0, refused.stdout
    assert "more than Redis has room for" in refused.stderr, refused.stderr
    assert "--force" in refused.stderr and "Traceback" not in refused.stderr
    assert _record(client).building is None  # nothing was started
    client.close()

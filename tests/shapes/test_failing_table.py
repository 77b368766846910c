"""A table whose changes are being dead-lettered (a column renamed or dropped) is loud: one ERROR
per episode naming the table, the cause and the fix, a few per-row WARNINGs at most, `connector
status` (and its --json) and the metric `connector_table_failing` show it; the dead letters
survive `connector reindex` (they live outside every physical index's keys); once the table or
the settings are fixed and the rows replayed, they come back and `verify` is clean."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import redis

from connector.config import Settings
from connector.core.keys import deadletter_key
from connector.embed import make_embedder
from connector.flow.health import ROW_WARNINGS
from connector.ops.resync import resync
from connector.ops.status import collect_status, render
from connector.sink.layout import current_specs, read_record
from connector.sink.redis_client import connect
from connector.testing.config import write_config
from connector.testing.daemon import DaemonThread
from tests.support import DOCUMENTS, assert_index_equals_table, cli, keys_of, make_settings, synced

Start = Callable[..., DaemonThread]
TABLE = "public.documents"
STREAM = deadletter_key("documents")
WORDS = [
    "alpaca",
    "bison",
    "cheetah",
    "dingo",
    "emu",
    "ferret",
    "gazelle",
    "heron",
    "ibex",
    "jackal",
]


def _execute(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def _stream(client: redis.Redis, settings: Settings) -> str:
    """The dead-letter stream the connector writes (and `status` counts) for `documents`."""
    return current_specs(client, settings)["documents"].deadletter


def _letters(client: redis.Redis, settings: Settings) -> list[dict[str, str]]:
    entries = client.xrange(_stream(client, settings))
    return [{k.decode(): v.decode() for k, v in fields.items()} for _id, fields in entries]


def _wait(what: str, done: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _said(caplog: pytest.LogCaptureFixture, level: int, *words: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == level and all(w in r.getMessage() for w in words)
    ]


def _failing(settings: Settings) -> list[str]:
    return [f["table"] for f in collect_status(settings).failing]


def _found_by_own_word(settings: Settings, dsn: str, current: list[int], gone: list[int]) -> None:
    """Every current row is found by its own word (row n: WORDS[n - 1]), no gone one is."""
    found = synced(settings, dsn)
    for n in current:
        assert (str(n),) in keys_of(found, WORDS[n - 1], k=3), f"row {n} not found"
    for n in gone:
        assert (str(n),) not in keys_of(found, WORDS[n - 1], k=20), f"gone row {n} found"


def test_a_renamed_content_column_fails_loudly_and_its_dead_letters_survive_the_rebuild(
    migrated_dsn: str,
    redis_url: str,
    run_connector: Start,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.INFO)
    old = make_settings(migrated_dsn, redis_url, pipeline={"gc_grace_s": 0.5})
    running = run_connector(old, probes=True)
    for n in range(1, 5):
        _execute(migrated_dsn, f"INSERT INTO documents (id, title, body) VALUES ({n}, "
                               f"'title {n}', 'the {WORDS[n - 1]} of row {n}')")  # fmt: skip
    synced(old, migrated_dsn)
    assert running.metric("connector_table_failing", table=TABLE) == 0

    _execute(migrated_dsn, "ALTER TABLE documents RENAME COLUMN body TO text")
    for n in range(5, 10):  # inserts and updates alike: each a dead letter
        _execute(migrated_dsn, f"INSERT INTO documents (id, title, text) VALUES ({n}, "
                               f"'title {n}', 'the {WORDS[n - 1]} of row {n}')")  # fmt: skip
    _execute(migrated_dsn, "UPDATE documents SET title = 'retitled' WHERE id IN (1, 3)",
             "DELETE FROM documents WHERE id = 2")  # fmt: skip
    client = connect(redis_url)
    _wait("7 dead letters", lambda: len(_letters(client, old)) == 7)
    synced(old, migrated_dsn)

    letters = _letters(client, old)
    assert sorted(letter["op"] for letter in letters) == ["I"] * 5 + ["U"] * 2
    for letter in letters:
        assert "content column(s) body" in letter["error"], letter["error"]
        assert "dropped or renamed" in letter["error"] and "TOASTed" not in letter["error"]
    errors = _said(caplog, logging.ERROR, TABLE, "is failing", "Cause:", "Fix:")
    assert len(errors) == 1, errors
    assert "content column(s) body" in errors[0] and "connector reindex" in errors[0]
    assert len(_said(caplog, logging.WARNING, "dead-lettered a row of")) <= ROW_WARNINGS
    assert running.metric("connector_table_failing", table=TABLE) == 1
    assert running.probe("/readyz")[0] == 200  # searches still answer: README says why
    status = collect_status(old)
    assert [f["table"] for f in status.failing] == [TABLE]
    assert "FAILING table     public.documents" in render(status)
    shown = cli(write_config(tmp_path / "old.toml", old), "status", "--json")
    assert shown.returncode == 0, shown.stderr
    assert [f["table"] for f in json.loads(shown.stdout)["failing"]] == [TABLE]

    # The fix: the settings name the column as it is now, and `connector reindex` rebuilds.
    running.stop()
    renamed = [dict(DOCUMENTS, content=["title", "text"])]
    new = make_settings(migrated_dsn, redis_url, renamed, pipeline={"gc_grace_s": 0.5})
    asked = cli(write_config(tmp_path / "new.toml", new), "reindex")
    assert asked.returncode == 0, asked.stdout + asked.stderr
    first = read_record(client, "documents")
    assert first is not None and first.building is not None
    rebuilt = run_connector(new, probes=True)

    def switched_and_dropped() -> bool:
        record = read_record(client, "documents")
        return record is not None and record.current != first.current and not record.retiring

    _wait("the switch and the old index dropped", switched_and_dropped)
    assert not list(client.scan_iter(match=f"{first.current.prefix}:*", count=1000))
    assert len(_letters(client, new)) == 7, "the dead letters went with the old index"
    assert collect_status(new).indexes[0].dead_letters == 7
    _execute(migrated_dsn, "INSERT INTO documents (id, title, text) VALUES (10, 'title 10', "
                           f"'the {WORDS[9]} of row 10, after the fix')")  # fmt: skip
    _found_by_own_word(new, migrated_dsn, [1, 3, 4, 5, 6, 7, 8, 9, 10], gone=[2])
    assert_index_equals_table(new, migrated_dsn)
    assert _failing(new) == []
    assert rebuilt.metric("connector_table_failing", table=TABLE) == 0
    assert len(_said(caplog, logging.ERROR, TABLE, "is failing")) == 1
    client.close()


def test_a_dropped_metadata_column_says_so_and_inserts_and_updates_alike_come_back_on_replay(
    migrated_dsn: str,
    redis_url: str,
    run_connector: Start,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    client = connect(redis_url)
    # A dead letter an earlier connector kept under the index's keys is carried over.
    client.xadd("documents:deadletter", {"table": TABLE, "op": "I", "error": "earlier"})
    settings = make_settings(migrated_dsn, redis_url)
    running = run_connector(settings, probes=True)
    assert client.exists("documents:deadletter") == 0
    assert _stream(client, settings) == STREAM
    assert [letter["error"] for letter in _letters(client, settings)] == ["earlier"]
    for n in range(1, 5):
        _execute(migrated_dsn, f"INSERT INTO documents (id, title, body, source) VALUES ({n}, "
                               f"'title {n}', 'row {n}', 'web')")  # fmt: skip
    synced(settings, migrated_dsn)

    _execute(migrated_dsn, "ALTER TABLE documents DROP COLUMN source")
    for n in range(5, 8):
        _execute(migrated_dsn, f"INSERT INTO documents (id, title, body) VALUES ({n}, "
                               f"'title {n}', 'the {WORDS[n - 1]} of row {n}')")  # fmt: skip
    for n in range(1, 4):
        _execute(migrated_dsn, f"UPDATE documents SET body = 'the {WORDS[n - 1]} of row {n}' "
                               f"WHERE id = {n}")  # fmt: skip
    _execute(migrated_dsn, "DELETE FROM documents WHERE id = 4")
    _wait("6 more dead letters", lambda: len(_letters(client, settings)) == 7)
    synced(settings, migrated_dsn)

    letters = _letters(client, settings)[1:]
    assert sorted(letter["op"] for letter in letters) == ["I"] * 3 + ["U"] * 3
    for letter in letters:
        assert "metadata column(s) source" in letter["error"], letter["error"]
        assert "content column" not in letter["error"] and "TOASTed" not in letter["error"]
    errors = _said(caplog, logging.ERROR, TABLE, "is failing")
    assert len(errors) == 1 and "metadata column(s) source" in errors[0], errors
    assert running.metric("connector_table_failing", table=TABLE) == 1
    assert _failing(settings) == [TABLE]

    # The fix: the column is back; the replay copies the table's rows next to the daemon.
    _execute(migrated_dsn, "ALTER TABLE documents ADD COLUMN source text NOT NULL DEFAULT 'web'")
    embedder = make_embedder(settings.embedding)
    try:
        resync(settings, embedder, ["documents"])
    finally:
        embedder.close()
    for n in range(5, 8):  # changes of the table are indexed again: the episode ends
        _execute(migrated_dsn, f"UPDATE documents SET title = 'again {n}' WHERE id = {n}")
    synced(settings, migrated_dsn)
    _wait("the table to recover", lambda: _failing(settings) == [], 10)
    assert running.metric("connector_table_failing", table=TABLE) == 0
    assert _said(caplog, logging.WARNING, TABLE, "recovered")
    assert client.xlen(STREAM) == 7, "dead letters are kept: the record of what was replayed"
    assert_index_equals_table(settings, migrated_dsn)
    _found_by_own_word(settings, migrated_dsn, [1, 2, 3, 5, 6, 7], gone=[4])
    assert len(_said(caplog, logging.ERROR, TABLE, "is failing")) == 1
    client.close()

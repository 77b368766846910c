"""`connector demo`'s wait for the first indexing, against a real connector: one progress line of
rows (never chunks: each row here makes several), plain lines when stdout is not a terminal."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from connector import demo
from connector.config import Settings
from connector.query import searcher
from connector.testing.daemon import DaemonThread
from connector.testing.openai_server import FakeOpenAI
from tests.support import make_settings, openai_settings, wal_lsn

Start = Callable[[Settings], DaemonThread]


def test_the_demo_counts_rows_indexed_in_plain_lines_off_a_terminal(
    migrated_dsn: str, redis_url: str, run_connector: Start, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, fake_openai: FakeOpenAI,
) -> None:  # fmt: skip
    monkeypatch.setattr(demo, "_LINE_EVERY_S", 0.0)  # a line each time the count moves
    fake_openai.latency_s = 0.1  # a provider's pace: the writes take a few polls
    embedding = openai_settings(fake_openai)
    settings = make_settings(migrated_dsn, redis_url, embedding=embedding,
                             pipeline={"batch_max_rows": 50})  # fmt: skip
    run_connector(settings)
    body = " ".join(f"word{n}" for n in range(300))  # 64-token chunks: several per row
    with psycopg.connect(migrated_dsn) as conn:  # one transaction, written in slices of 50
        rows = [(n, f"doc {n}", body) for n in range(1, 301)]
        conn.cursor().executemany("INSERT INTO documents (id, title, body) VALUES (%s, %s, %s)",
                                  rows)  # fmt: skip
        conn.commit()
        lsn = wal_lsn(conn)
    found = searcher(settings)
    demo._wait_with_progress(found, lsn, 300, lambda: True, Path("connector.log"), 60)
    out = capsys.readouterr().out  # not a terminal
    lines = out.splitlines()
    assert "\r" not in out and "chunks" not in out, out
    assert lines and all(line.startswith("indexing documents: ") for line in lines), out
    for done, total in re.findall(r"(\d+)/(\d+) rows", out):
        assert int(total) == 300 and int(done) <= 300, out
    assert lines[-1].startswith("indexing documents: 300 rows"), out

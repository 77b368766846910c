"""Databases not in UTF8, through the real daemon. wal2json writes the database's encoding into
the stream (it is never converted to a client encoding): a LATIN1 database is decoded as
LATIN1, in the stream, the initial copy and the TOAST read-back alike, and its rows are found by
their accented words. A SQL_ASCII database declares no encoding: it is refused at start, naming
`postgres.sql_ascii_encoding`; with that setting its bytes are read in the encoding it names."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import psycopg
import pytest

from connector.config import Settings
from connector.errors import ConfigError
from connector.ops.verify import verify
from connector.query import Searcher
from connector.testing.daemon import DaemonThread
from connector.testing.services import Services
from tests.support import assert_index_equals_table, incompressible, make_settings, synced

Start = Callable[[Settings], DaemonThread]

# One word of its own per row, each with a character outside ASCII (all of them in LATIN1).
WORDS = [
    "straße", "müller", "crème", "façade", "smørrebrød", "ñandú", "garçon", "öffnung",
    "élan", "übung", "æble", "señorita",
]  # fmt: skip
# Beyond LATIN1: what a SQL_ASCII database written in UTF-8 may hold.
WIDE = ["Ωmega", "日本語", "добро", "ἀρχή"]


def _settings(dsn: str, url: str, **postgres: object) -> Settings:
    table = {"name": "public.notes", "index": "notes", "content": ["title", "body"],
             "metadata": {"label": "tag"}}  # fmt: skip
    return make_settings(dsn, url, tables=[table], postgres={"slot": "test_slot", **postgres})


def _create(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        # The default replica identity: an UPDATE that leaves the TOASTed body out has it read
        # back from the table.
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY, title text, body text, label text)")


def _put(dsn: str, n: int, word: str, body: str = "") -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO notes VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO UPDATE "
            "SET title = excluded.title, body = excluded.body, label = excluded.label",
            [n, f"Note über {word}", f"the word {word} is row {n}'s own. {body}", word],
        )


def _hits(found: Searcher, word: str) -> list[tuple[str, ...]]:
    return [hit.key for hit in found.search(word, k=5) if word in hit.content]


def _assert_found(found: Searcher, words: dict[int, str], gone: dict[int, str]) -> None:
    for n, word in words.items():
        assert (str(n),) in _hits(found, word), f"row {n} not found by {word!r}"
        assert {h.key for h in found.search("x", k=5, filters={"label": word})} == {(str(n),)}
    for n, word in gone.items():
        assert (str(n),) not in _hits(found, word), f"deleted row {n} found by {word!r}"


@pytest.fixture
def latin1_dsn(services: Services) -> Iterator[str]:
    with services.database("t_latin1_", "LATIN1") as dsn:
        yield dsn


@pytest.fixture
def sql_ascii_dsn(services: Services) -> Iterator[str]:
    with services.database("t_ascii_", "SQL_ASCII") as dsn:
        yield dsn


def test_latin1_database_is_read_in_its_encoding(
    latin1_dsn: str, redis_url: str, run_connector: Start
) -> None:
    _create(latin1_dsn)
    words = dict(enumerate(WORDS, start=1))
    toasted = incompressible(4000)  # stays TOASTed: left out of an UPDATE of the title
    for n in (1, 2, 3):  # copied at the first start
        _put(latin1_dsn, n, words[n], toasted if n == 3 else "")
    settings = _settings(latin1_dsn, redis_url)
    run_connector(settings)
    for n in range(4, len(WORDS) + 1):  # streamed
        _put(latin1_dsn, n, words[n])
    with psycopg.connect(latin1_dsn, autocommit=True) as conn:
        conn.execute("UPDATE notes SET body = %s WHERE id = 2", [f"now the word {WORDS[1]} zürich"])
        conn.execute("UPDATE notes SET title = 'größe', label = 'größe' WHERE id = 3")
        conn.execute("DELETE FROM notes WHERE id = 5")
    words[3] = "größe"
    gone = {5: words.pop(5)}
    found = synced(settings, latin1_dsn)
    _assert_found(found, words, gone)
    assert "zürich" in found.search("zürich", k=1)[0].content
    hit = found.search(WORDS[2], k=1)[0]  # the body read back by key, in its encoding
    assert hit.key == ("3",) and hit.metadata["label"] == "größe" and WORDS[2] in hit.content
    assert_index_equals_table(settings, latin1_dsn)
    assert all(d.clean for d in verify(settings)), [d.summary() for d in verify(settings)]


def test_sql_ascii_database_is_refused_until_its_encoding_is_declared(
    sql_ascii_dsn: str, redis_url: str, run_connector: Start
) -> None:
    _create(sql_ascii_dsn)
    words = dict(enumerate([*WORDS[:4], *WIDE], start=1))
    for n in (1, 2, 3, 4):
        _put(sql_ascii_dsn, n, words[n])  # psycopg writes UTF-8 bytes into a SQL_ASCII session
    refused = _settings(sql_ascii_dsn, redis_url)
    with pytest.raises(ConfigError, match=r"SQL_ASCII.*postgres\.sql_ascii_encoding"):
        run_connector(refused)
    with pytest.raises(ConfigError, match=r"postgres\.sql_ascii_encoding"):
        verify(refused)

    settings = _settings(sql_ascii_dsn, redis_url, sql_ascii_encoding="UTF8")
    daemon = run_connector(settings)
    for n in range(5, len(words) + 1):
        _put(sql_ascii_dsn, n, words[n])
    with psycopg.connect(sql_ascii_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM notes WHERE id = 2")
    gone = {2: words.pop(2)}
    # The test's own session reads text too: it says what the bytes are, as the setting does.
    found = synced(settings, psycopg.conninfo.make_conninfo(sql_ascii_dsn, client_encoding="UTF8"))
    _assert_found(found, words, gone)
    assert all(d.clean for d in verify(settings)), [d.summary() for d in verify(settings)]

    # A byte that is not UTF-8 (LATIN1's é) stops the daemon with the fix: it is no transient.
    with psycopg.connect(sql_ascii_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO notes VALUES (99, 'caf' || convert_from('\\xe9', 'SQL_ASCII'))")
    daemon.thread.join(30)
    assert not daemon.thread.is_alive()
    assert isinstance(daemon.errors[0], ConfigError)
    assert re.search(r"not valid utf-8 .*sql_ascii_encoding", str(daemon.errors[0]))
    with pytest.raises(ConfigError, match=r"notes holds text .*sql_ascii_encoding"):
        verify(settings)  # as a copy reads it

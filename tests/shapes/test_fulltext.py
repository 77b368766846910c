"""Full text and line breaks: RediSearch 2.10 does not split words on LF, CR, the no-break and
other Unicode spaces, or non-ASCII punctuation; the connector indexes a normalised text and asks
with the same words (core.fulltext). Through the real daemon: a word next to each such
character is found by a `text` filter and by the BM25 leg of hybrid search, a search hands
back the text as written, and `verify` is clean (also after repairing chunks an earlier
connector wrote without normalising, whose vectors are kept)."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
import redis

from connector.config import Settings
from connector.core.fulltext import ORIGINAL_FIELD
from connector.core.keys import Keyspace
from connector.embed import make_embedder
from connector.ops.verify import repair, verify
from connector.query.searcher import Searcher
from connector.testing.daemon import DaemonThread
from tests.support import (
    assert_index_equals_table,
    incompressible,
    make_settings,
    newest_version,
    synced,
)

Start = Callable[[Settings], DaemonThread]
TABLE = "public.notes"
KEYS = Keyspace("notes")
# Characters RediSearch 2.10 does not split words on (measured), and the tab that it does.
JOINERS = {
    "lf": "\n", "cr": "\r", "crlf": "\r\n", "vt": "\x0b", "ff": "\x0c", "nel": "\x85",
    "nbsp": "\u00a0", "thin-space": "\u2009", "narrow-nbsp": "\u202f", "ls": "\u2028",
    "ps": "\u2029", "ideographic-space": "\u3000", "em-dash": "\u2014",
    "curly-apostrophe": "\u2019", "backslash": "\\", "tab": "\t",
}  # fmt: skip
NAMES = list(JOINERS)
# A hit found by both legs of a hybrid search scores above any found by one (RRF, k = 60).
ONE_LEG = 1 / 61


def word(side: str, n: int) -> str:
    """A word only row `n` has (letters only: no stemming or number parsing in the way)."""
    return side + "".join("abcdefghij"[int(d)] for d in f"{n:03d}")


def body(n: int, joiner: str) -> str:
    return f"{word('left', n)}{joiner}{word('right', n)} ends here"


def label(n: int, joiner: str) -> str:
    return f"{word('lab', n)}{joiner}{word('bel', n)}"


def title(n: int) -> str:
    return f"heading {word('last', n)}"  # its last word meets the body's first at a blank line


def _settings(dsn: str, url: str) -> Settings:
    table = {"name": TABLE, "index": "notes", "content": ["title", "body"],
             "metadata": {"label": "text"}}  # fmt: skip
    return make_settings(dsn, url, tables=[table])


def _create(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY, title text, body text, label text)")


def _write(dsn: str, *statements: tuple[str, tuple[object, ...]]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for sql, args in statements:
            conn.execute(sql, args)


def _found_by_text_filter(found: Searcher, n: int, joiner: str) -> bool:
    for value in (word("bel", n), word("lab", n), label(n, joiner)):
        hits = found.search("anything", k=5, filters={"label": value})
        if {h.key for h in hits} != {(str(n),)}:
            return False
    return True


def _found_by_bm25(found: Searcher, n: int, query: str) -> bool:
    hits = found.search(query, k=3, hybrid=True)
    return bool(hits) and hits[0].key == (str(n),) and hits[0].score > ONE_LEG


def _assert_each_found(found: Searcher, rows: dict[int, str]) -> None:
    missed = []
    for n, joiner in rows.items():
        name = NAMES[n]
        if not _found_by_text_filter(found, n, joiner):
            missed.append(f"{name}: text filter")
        for query in (word("right", n), word("left", n), body(n, joiner), word("last", n)):
            if not _found_by_bm25(found, n, query):
                missed.append(f"{name}: hybrid {query!r}")
        hit = found.search(body(n, joiner), k=1)[0]
        if hit.content != f"{title(n)}\n\n{body(n, joiner)}":  # the text as written
            missed.append(f"{name}: content {hit.content!r}")
    assert not missed, missed


def test_words_next_to_line_breaks_and_unicode_spaces_are_found(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    _create(migrated_dsn)
    settings = _settings(migrated_dsn, redis_url)
    run_connector(settings)
    rows = dict(enumerate(JOINERS.values()))
    gone = len(rows)
    _write(
        migrated_dsn,
        *[
            ("INSERT INTO notes VALUES (%s, %s, %s, %s)", (n, title(n), body(n, j), label(n, j)))
            for n, j in [*rows.items(), (gone, "\n")]
        ],
        ("DELETE FROM notes WHERE id = %s", (gone,)),
    )
    found = synced(settings, migrated_dsn)
    _assert_each_found(found, rows)
    assert found.search(word("right", gone), k=3, hybrid=True)[0].score <= ONE_LEG
    assert not found.search("x", filters={"label": word("bel", gone)})
    assert_index_equals_table(settings, migrated_dsn)


def test_chunks_an_earlier_connector_wrote_unnormalised_are_repaired_keeping_vectors(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    """An index written before full text was normalised: `verify` names its rows stale, and
    `--repair` indexes them again without embedding anything."""
    _create(migrated_dsn)
    settings = _settings(migrated_dsn, redis_url)
    running = run_connector(settings)
    rows = {n: JOINERS[name] for n, name in enumerate(NAMES) if name in ("lf", "nbsp", "ls")}
    _write(
        migrated_dsn,
        *[
            ("INSERT INTO notes VALUES (%s, %s, %s, %s)", (n, title(n), body(n, j), label(n, j)))
            for n, j in rows.items()
        ],
    )
    synced(settings, migrated_dsn)
    running.stop()
    client = redis.Redis.from_url(redis_url)
    vectors = {}
    for n in rows:  # as an earlier connector wrote them: the text as written, indexed as is
        (chunk,) = newest_version(client, KEYS, TABLE, str(n)).chunks
        key = KEYS.chunk(TABLE, str(n), chunk)
        original = client.hget(key, ORIGINAL_FIELD)
        assert original is not None
        client.hset(key, "content", original)
        client.hdel(key, ORIGINAL_FIELD)
        vectors[key] = client.hget(key, "embedding")
    drifts = verify(settings)
    assert [len(d.stale) for d in drifts] == [len(rows)], [d.summary() for d in drifts]
    embedder = make_embedder(settings.embedding)
    repair(settings, embedder, drifts)
    assert embedder.stats.texts == 0  # the texts did not change: nothing is embedded
    for key, vector in vectors.items():
        assert client.hget(key, "embedding") == vector
    assert_index_equals_table(settings, migrated_dsn)
    run_connector(settings)
    _assert_each_found(synced(settings, migrated_dsn), rows)
    client.close()


@pytest.mark.parametrize("name", ["lf", "nbsp"])
def test_a_metadata_only_update_keeps_the_text_as_written(
    migrated_dsn: str, redis_url: str, run_connector: Start, name: str
) -> None:
    """An UPDATE that leaves the (TOASTed) content out copies the chunks' texts from Redis: the
    texts as written, indexed normalised again."""
    _create(migrated_dsn)
    table = {"name": TABLE, "index": "notes", "content": ["body"], "metadata": {"label": "text"}}
    settings = make_settings(migrated_dsn, redis_url, tables=[table])
    run_connector(settings)
    n, joiner = NAMES.index(name), JOINERS[name]
    text = f"{body(n, joiner)} {incompressible(1500)}"  # stored out of line: left out
    _write(migrated_dsn, ("INSERT INTO notes VALUES (%s, '', %s, 'old')", (n, text)))
    synced(settings, migrated_dsn)
    _write(migrated_dsn, ("UPDATE notes SET label = %s WHERE id = %s", (label(n, joiner), n)))
    found = synced(settings, migrated_dsn)
    assert _found_by_text_filter(found, n, joiner)
    assert _found_by_bm25(found, n, word("right", n))
    assert found.search(body(n, joiner), k=1)[0].content.startswith(body(n, joiner))
    assert_index_equals_table(settings, migrated_dsn)

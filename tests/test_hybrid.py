"""Hybrid search's BM25 leg leaves out words too common to rank (query.terms), and a search is
one round trip to Redis (query.trip): against the real Redis Stack."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis

from connector.config import Settings
from connector.query import Searcher
from connector.testing.daemon import DaemonThread
from tests.support import insert, make_settings, synced

Start = Callable[[Settings], DaemonThread]
COMMON = 40  # rows holding the word "ledger"; the test's budget is below it


@pytest.fixture
def found(migrated_dsn: str, redis_url: str, run_connector: Start) -> Iterator[Searcher]:
    """A synced index: COMMON rows that say "ledger", one that also says "zebrafish", and a few
    that say neither; the BM25 leg's budget set below COMMON chunks."""
    settings = make_settings(migrated_dsn, redis_url)
    run_connector(settings)
    rows = [
        (n, f"entry {n}", f"the ledger lists payment {n} for order {n * 7} in week {n % 9}")
        for n in range(1, COMMON + 1)
    ]
    rows.append((100, "notes", "a zebrafish tank was bought, see the ledger of the lab"))
    rows += [(200 + n, "misc", f"weather report number {n} for the harbour") for n in range(5)]
    insert(migrated_dsn, *rows)
    searcher = synced(settings, migrated_dsn)
    searcher.terms.budget = COMMON // 2
    yield searcher


def test_a_rare_word_ranks_its_document_first_with_the_common_word_left_out(
    found: Searcher,
) -> None:
    hits = found.search("ledger zebrafish", k=5, hybrid=True)
    assert hits[0].key == ("100",), hits
    # "ledger" is past the budget: the BM25 leg searched "zebrafish" alone, which only row 100
    # holds, so no other hit was ranked by the text (the KNN ranking alone: at most 1/61).
    assert all(hit.score <= 1 / 61 + 1e-9 for hit in hits[1:]), hits


def test_a_common_word_still_ranks_when_it_is_the_only_word_that_matches(
    found: Searcher,
) -> None:
    # "quokkaish" is in no chunk: the leg keeps "ledger", the rarest word that matches, and its
    # rows are ranked by the text as well as by the vector (a fused score above 1/61).
    hits = found.search("ledger quokkaish", k=5, hybrid=True)
    assert hits and all("ledger" in hit.content for hit in hits), hits
    assert hits[0].score > 1 / 61 + 1e-9, hits


def _commands_of(monitor: redis.client.Monitor, port: int, until: str) -> list[str]:
    """The commands the client on local `port` sent, as MONITOR saw them, up to `until`."""
    sent = []
    while True:
        seen = monitor.next_command()
        if seen["command"] == f"ECHO {until}":
            return sent
        if seen.get("client_type") != "lua" and seen.get("client_port") == str(port):
            sent.append(str(seen["command"]).split(" ", 1)[0].upper())


@pytest.mark.parametrize(
    ("text", "options"),
    [
        ("ledger payment", {}),
        ("ledger payment", {"filters": {"source": "x"}}),
        ("ledger zebrafish", {"hybrid": True}),
    ],
)
def test_a_search_is_one_round_trip(
    found: Searcher, redis_url: str, text: str, options: dict[str, object]
) -> None:
    found.search(text, k=5, **options)  # type: ignore[arg-type]  # warm: the words' counts
    watcher = redis.Redis.from_url(redis_url)
    with watcher.monitor() as monitor:
        found.search(text, k=5, **options)  # type: ignore[arg-type]
        port = found.client.connection_pool._available_connections[0]._sock.getsockname()[1]
        watcher.echo("done")
        sent = _commands_of(monitor, port, "done")
    watcher.close()
    assert sent == ["EVALSHA"], sent

"""A backlog becomes visible transaction group by transaction group (`pipeline.flip_rows`), not
at the end of its batch, and still never shows part of a source transaction.

Writes to Redis are paused (`CLIENT PAUSE ... WRITE`: the slow moment) while many small
multi-row transactions commit, so they queue up behind it and the daemon takes them as one
batch. A reader, as an external client reads (the documented visibility filter), counts each
transaction's visible rows meanwhile."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import redis

from connector.config import Settings
from connector.query import visibility_filter
from connector.sink.redis_client import command, connect
from connector.testing.daemon import DaemonThread
from tests.support import assert_index_equals_table, make_settings, synced

Start = Callable[[Settings], DaemonThread]

TXNS = 60
ROWS_PER_TXN = 5
FLIP_ROWS = 20  # 4 transactions a group: about 15 flips in the batch


class _Reader(threading.Thread):
    """Counts, again and again, the visible rows of each burst transaction (by its `source`)."""

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(name="test-reader", daemon=True)
        self.client = client
        self.totals: set[int] = set()  # visible burst rows, as each read found them
        self.torn: list[dict[str, int]] = []  # reads that saw part of a transaction
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            where = f"{visibility_filter(self.client, 'test_slot')} @tags:{{burst}}"
            reply = command(
                self.client, "FT.AGGREGATE", "documents", where, "LOAD", "2", "@source", "@pk",
                "GROUPBY", "1", "@source", "REDUCE", "COUNT_DISTINCT", "1", "@pk", "AS", "n",
            )  # fmt: skip
            counts = _counts(reply)
            self.totals.add(sum(counts.values()))
            if any(n != ROWS_PER_TXN for n in counts.values()):
                self.torn.append(counts)


def _counts(reply: dict[bytes, Any]) -> dict[str, int]:
    """{source: rows} from an FT.AGGREGATE reply (RESP3: a map of `results`)."""
    rows = [result[b"extra_attributes"] for result in reply[b"results"]]
    return {row[b"source"].decode(): int(row[b"n"]) for row in rows}


def test_a_backlog_becomes_visible_group_by_group_never_part_of_a_transaction(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    settings = make_settings(migrated_dsn, redis_url, pipeline={"flip_rows": FLIP_ROWS})
    run_connector(settings)
    synced(settings, migrated_dsn)  # streaming, nothing pending
    client, pauser = connect(redis_url), connect(redis_url)
    reader = _Reader(client)
    reader.start()
    ids = iter(range(1, TXNS * ROWS_PER_TXN + 1))
    pauser.execute_command("CLIENT", "PAUSE", "20000", "WRITE")
    try:
        with psycopg.connect(migrated_dsn, autocommit=True) as conn:
            for txn in range(TXNS):
                with conn.transaction():
                    for n in [next(ids) for _ in range(ROWS_PER_TXN)]:
                        conn.execute(
                            "INSERT INTO documents (id, title, body, source, tags) "
                            "VALUES (%s, %s, %s, %s, %s)",
                            [n, f"row {n}", f"burst body {n}", f"t{txn}", ["burst", f"row{n}"]],
                        )
        time.sleep(1.0)  # the daemon receives them all, queued behind the paused writes
    finally:
        pauser.execute_command("CLIENT", "UNPAUSE")
    found = synced(settings, migrated_dsn)
    time.sleep(0.05)
    reader.done.set()
    reader.join()

    assert not reader.torn, f"a reader saw part of a transaction: {reader.torn[:3]}"
    total = TXNS * ROWS_PER_TXN
    assert total in reader.totals
    # What the old flip at the batch's end showed: nothing, the first transaction, then all.
    between = sorted(n for n in reader.totals if 0 < n < total)
    assert len(between) >= 5, f"the batch became visible at once: {between}"
    assert_index_equals_table(settings, migrated_dsn)
    for n in range(1, total + 1):
        hits = found.search("burst body", k=1, filters={"tags": f"row{n}"})
        assert [h.key for h in hits] == [(str(n),)], f"row {n} not found by its own tag"
    client.close()
    pauser.close()

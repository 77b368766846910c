"""The bounded writer of the fault-injection suite: two content tables and a thread that keeps
changing them at a steady rate while the tests break things around the connector.

- `rel_a` (bigint key; content = title + body, the body stored out of line when large, so an
  UPDATE that leaves it out must be filled from the REPLICA IDENTITY FULL old row);
- `rel_b` (composite text key whose values hold `:`, `,`, `%` and spaces; content = body).

Each transaction changes 1 to 50 rows: inserts, content updates (new text, appended text,
shortened text, title only), metadata-only updates, key changes, deletes, and rarely a TRUNCATE
(of one table or both). Deleted keys come back now and then (inserts and key changes reuse them).
It never writes a row the connector should refuse, so every dead letter is a bug.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg

from tests.support import wal_lsn

TABLES: list[dict[str, object]] = [
    {
        "name": "public.rel_a",
        "index": "rel_a",
        "content": ["title", "body"],
        "metadata": {"source": "tag", "n": "numeric", "title": "text"},
        "chunk_tokens": 64,
        "chunk_overlap": 8,
    },
    {
        "name": "public.rel_b",
        "index": "rel_b",
        "content": ["body"],
        "metadata": {"tag": "tag", "n": "numeric"},
        "chunk_tokens": 48,
        "chunk_overlap": 0,
    },
]

DDL = [
    "CREATE TABLE rel_a (id bigint PRIMARY KEY, title text, body text, source text, n int)",
    "ALTER TABLE rel_a REPLICA IDENTITY FULL",
    # Large bodies go out of line uncompressed: a title-only UPDATE then omits the body.
    "ALTER TABLE rel_a ALTER COLUMN body SET STORAGE EXTERNAL",
    "CREATE TABLE rel_b (org text, slug text, body text, tag text, n int, PRIMARY KEY (org, slug))",
    "ALTER TABLE rel_b REPLICA IDENTITY FULL",
]

SOURCES = ["web", "mail", "docs", "chat", "wiki page"]
TAGS = ["red", "green", "blue:x", "a,b", "50%"]
ORGS = ["org:1", "org 2", "org,3", "o%4", "plain"]

Key = tuple[Any, ...]


def create_tables(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in DDL:
            conn.execute(statement)


def _vocabulary(rng: random.Random, size: int = 1500) -> list[str]:
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "zen", "qua", "bri", "dor", "ex"]
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))))
    return sorted(words)


@dataclass
class WriterStats:
    transactions: int = 0
    changes: int = 0  # committed row changes (a TRUNCATE counts as one)
    ops: Counter[str] = field(default_factory=Counter)
    truncates: int = 0
    failed_transactions: int = 0  # lost to a fault (the writer reconnects and goes on)
    seeded_rows: int = 0
    last_commit_lsn: str | None = None  # pg_current_wal_lsn() right after the last commit


@dataclass
class _Rows:
    """The writer's picture of one table: the keys it holds, and keys it held once (deleted,
    truncated or renamed away) that inserts and key changes bring back, so tombstones and
    truncate floors meet rows that return."""

    keys: list[Key] = field(default_factory=list)
    graves: list[Key] = field(default_factory=list)

    def copy(self) -> _Rows:
        return _Rows(list(self.keys), list(self.graves))

    def bury(self, key: Key) -> None:
        self.graves.append(key)
        del self.graves[:-500]


class Writer(threading.Thread):
    """Writes `rate` transactions per second until `duration_s` or `max_transactions` is
    reached, or `stop()` is called. A transaction lost to a fault (Postgres restarting) is
    counted; the writer reconnects, reloads the keys it picks from, and goes on."""

    def __init__(
        self,
        dsn: str,
        seed: int,
        rate: float = 15.0,
        duration_s: float = 8.0,
        max_transactions: int = 100_000,
        truncate_probability: float = 0.01,
    ) -> None:
        super().__init__(name="reliability-writer", daemon=True)
        self.dsn = dsn
        self.rng = random.Random(seed)
        self.rate = rate
        self.duration_s = duration_s
        self.max_transactions = max_transactions
        self.truncate_probability = truncate_probability
        self.stats = WriterStats()
        self.error: BaseException | None = None
        self._halt = threading.Event()
        self._words = _vocabulary(self.rng)
        self._rows = {"rel_a": _Rows(), "rel_b": _Rows()}
        self._next_id = 1
        self._next_slug = 1
        self._target = {"rel_a": 300, "rel_b": 200}
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None

    # ----------------------------------------------------------------- control

    def stop(self) -> None:
        self._halt.set()

    def finish(self, timeout_s: float = 60.0) -> WriterStats:
        """Wait for the writer's bound (or its stop), and raise what broke it."""
        self.join(timeout_s)
        if self.is_alive():
            raise TimeoutError("the writer did not finish")
        if self.error is not None:
            raise self.error
        return self.stats

    def seed_rows(self, rows_a: int = 200, rows_b: int = 120) -> None:
        """Rows that exist before the connector starts (its initial copy)."""
        with psycopg.connect(self.dsn) as conn:
            for _ in range(rows_a):
                self._insert(conn, "rel_a", self._rows["rel_a"], reuse=False)
            for _ in range(rows_b):
                self._insert(conn, "rel_b", self._rows["rel_b"], reuse=False)
        self.stats.seeded_rows += rows_a + rows_b

    # ----------------------------------------------------------------- the loop

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:
            self.error = exc
        finally:
            if self._conn is not None:
                self._conn.close()

    def _loop(self) -> None:
        started = time.monotonic()
        interval = 1.0 / self.rate
        due = started
        while not self._halt.is_set() and self.stats.transactions < self.max_transactions:
            now = time.monotonic()
            if now - started >= self.duration_s:
                return
            if now < due:
                self._halt.wait(due - now)
                continue
            due += interval
            if due < now - 1.0:  # fell behind (a fault): keep the rate, do not burst
                due = now
            try:
                self._transaction()
            except (psycopg.OperationalError, psycopg.InterfaceError):
                self.stats.failed_transactions += 1
                self._reset_connection()
                self._halt.wait(0.2)

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
            self._reload_keys(self._conn)
        return self._conn

    def _reset_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _reload_keys(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        """After a lost connection the last commit's outcome is unknown: ask the tables."""
        queries = {"rel_a": "SELECT id FROM rel_a", "rel_b": "SELECT org, slug FROM rel_b"}
        for table, query in queries.items():
            rows = self._rows[table]
            rows.keys = sorted(tuple(r) for r in conn.execute(query))
            present = set(rows.keys)
            rows.graves = [key for key in rows.graves if key not in present]
        top = max((int(k[0]) for k in self._rows["rel_a"].keys), default=0)
        self._next_id = max(self._next_id, top + 1)

    def _transaction(self) -> None:
        conn = self._connection()
        state = {name: rows.copy() for name, rows in self._rows.items()}
        count = self.rng.randint(1, 5) if self.rng.random() < 0.5 else self.rng.randint(1, 50)
        done: Counter[str] = Counter()
        with conn.transaction():
            if self.rng.random() < self.truncate_probability:
                tables = self.rng.choice([["rel_a"], ["rel_b"], ["rel_a", "rel_b"]])
                conn.execute(f"TRUNCATE {', '.join(tables)}")
                for table in tables:
                    for key in state[table].keys:
                        state[table].bury(key)
                    state[table].keys = []
                done["truncate"] += 1
            for _ in range(count):
                table = "rel_a" if self.rng.random() < 0.6 else "rel_b"
                done[self._change(conn, table, state[table])] += 1
        self._rows = state
        self.stats.transactions += 1
        self.stats.changes += sum(done.values())
        self.stats.ops.update(done)
        self.stats.truncates += done["truncate"]
        self.stats.last_commit_lsn = wal_lsn(conn)

    # ----------------------------------------------------------------- row changes

    def _text(self, low: int, high: int) -> str:
        words = [self.rng.choice(self._words) for _ in range(self.rng.randint(low, high))]
        for i in range(12, len(words), self.rng.randint(20, 60)):
            words[i] = words[i] + ".\n\n"  # paragraphs, for the chunker
        return " ".join(words).replace("\n\n ", "\n\n")

    def _body(self) -> str:
        roll = self.rng.random()
        if roll < 0.05:
            return self._text(400, 700)  # > 2 kB: stored out of line (TOAST)
        if roll < 0.3:
            return self._text(60, 250)
        return self._text(5, 60)

    def _n(self) -> int | None:
        return None if self.rng.random() < 0.1 else self.rng.randint(-1000, 100_000)

    def _source(self) -> str | None:
        return None if self.rng.random() < 0.05 else self.rng.choice(SOURCES)

    def _pick_op(self, table: str, rows: _Rows) -> str:
        if not rows.keys:
            return "insert"
        size, target = len(rows.keys), self._target[table]
        weights = {
            "insert": 0.35 if size < target else 0.12,
            "update_body": 0.14,
            "append": 0.10,
            "shorten": 0.05,
            "title": 0.06 if table == "rel_a" else 0.0,  # content partly unchanged
            "metadata": 0.16,
            "rekey": 0.05,  # the key itself changes
            "delete": 0.16 if size > target // 2 else 0.04,
        }
        return self.rng.choices(list(weights), weights=list(weights.values()))[0]

    def _change(self, conn: psycopg.Connection[tuple[Any, ...]], table: str, rows: _Rows) -> str:
        op = self._pick_op(table, rows)
        if op == "insert":
            self._insert(conn, table, rows)
            return op
        index = self.rng.randrange(len(rows.keys))
        key = rows.keys[index]
        where = "id = %s" if table == "rel_a" else "org = %s AND slug = %s"
        if op == "delete":
            conn.execute(f"DELETE FROM {table} WHERE {where}", key)
            rows.bury(rows.keys.pop(index))
        elif op == "rekey":
            new = self._new_key(table, rows, reuse=True)
            columns = "id = %s" if table == "rel_a" else "org = %s, slug = %s"
            conn.execute(f"UPDATE {table} SET {columns} WHERE {where}", [*new, *key])
            rows.keys[index] = new
            rows.bury(key)
        else:
            assignments, values = self._update(op, table)
            conn.execute(f"UPDATE {table} SET {assignments} WHERE {where}", [*values, *key])
        return op

    def _update(self, op: str, table: str) -> tuple[str, list[object]]:
        if op == "update_body":
            return "body = %s", [self._body()]
        if op == "append":
            return "body = body || %s", [" " + self._text(3, 40)]
        if op == "shorten":
            return "body = left(body, greatest(length(body) / 3, 12))", []
        if op == "title":
            return "title = %s", [self._text(2, 6)]
        if table == "rel_a":
            return "source = %s, n = %s", [self._source(), self._n()]
        return "tag = %s, n = %s", [self.rng.choice(TAGS), self._n()]

    def _new_key(self, table: str, rows: _Rows, reuse: bool) -> Key:
        """A key the table does not hold: one it held before (a third of the time), or new."""
        if reuse and rows.graves and self.rng.random() < 0.35:
            return rows.graves.pop(self.rng.randrange(len(rows.graves)))
        if table == "rel_a":
            self._next_id += 1
            return (self._next_id,)
        self._next_slug += 1
        slug = f"slug:{self._next_slug} x,{self.rng.randint(0, 99)}%"
        return (self.rng.choice(ORGS), slug)

    def _insert(
        self, conn: psycopg.Connection[tuple[Any, ...]], table: str, rows: _Rows, reuse: bool = True
    ) -> None:
        key = self._new_key(table, rows, reuse)
        if table == "rel_a":
            title = None if self.rng.random() < 0.05 else self._text(2, 8)
            conn.execute(
                "INSERT INTO rel_a (id, title, body, source, n) VALUES (%s, %s, %s, %s, %s)",
                [*key, title, self._body(), self._source(), self._n()],
            )
        else:
            conn.execute(
                "INSERT INTO rel_b (org, slug, body, tag, n) VALUES (%s, %s, %s, %s, %s)",
                [*key, self._body(), self.rng.choice(TAGS), self._n()],
            )
        rows.keys.append(key)

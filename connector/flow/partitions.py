"""Partitioned tables in the stream: which configured table each relation's changes belong to.

wal2json names a change after the leaf partition it happened in, and a partition can be created
(or attached) at any moment, written in the same transaction. So the server-side table filter
lets through every table of the schemas a partitioned table and its partitions live in
(`schema.*`), never a list of today's partitions, and each relation name the stream brings is
resolved here, through the catalog, to the configured table it is a partition of (its nearest
configured ancestor, at any depth) before its batch is applied: a change is never confirmed
before its relation was resolved. A relation of no configured table is remembered as such for a
short while (`_UNRELATED_S`).

A partition new to the connector (created or attached while it streams, or while it was down)
is copied once from a fresh snapshot, in a thread of its own: an attached table brings rows the
stream never carried, and the changes to it that arrived before it was attached are in that
copy. The partitions copied are recorded in Redis (`connector:<slot>:partitions`), so a crash
during such a copy copies it again at the next start.

A partition detached or dropped is not in the stream (DDL never is). The daemon notices it is
gone from the table (a recorded partition that is no longer one) and writes a logical message
(`pg_logical_emit_message`) naming it into the WAL; when the stream brings that message, the
partition's rows are removed like a TRUNCATE of it, in stream order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace

import psycopg
import redis

from connector.config import Settings
from connector.core.changes import Op, RowChange, Transaction
from connector.core.keys import partitions_key
from connector.core.tables import TableInfo, routes
from connector.errors import ConfigError, ReplicationError
from connector.flow.applier import Applier
from connector.flow.copy import CopyOptions, copy_at_new_snapshot
from connector.flow.targets import Target
from connector.logs import redact
from connector.sink.redis_client import Fields, client_for, text
from connector.source.catalog import partition_ancestors, partition_leaves
from connector.source.connection import connect

log = logging.getLogger(__name__)

# How long a relation found to belong to no configured table is taken as such (a table attached
# as a partition meanwhile is found by the next poll, and copied).
_UNRELATED_S = 10.0
# The logical message that says a partition left its table: `<table>\n<partition>`.
GONE_PREFIX = "connector.partition_gone"


def check_overlaps(tables: Mapping[str, TableInfo]) -> None:
    """Refuse a configured table that is also a partition of another configured table."""
    for table in tables.values():
        for leaf in sorted(table.leaves & tables.keys()):
            raise ConfigError(
                f"table {leaf} is configured, and is also a partition of configured table "
                f"{table.name}: its changes would be indexed twice. Keep one of the two "
                "[[tables]] sections"
            )


def table_filter(tables: Iterable[TableInfo]) -> list[str]:
    """wal2json's `add-tables`: a plain table by its name; for a partitioned one, every table of
    the schemas it and its partitions are in (a new partition there is never filtered out)."""
    names: dict[str, None] = {}
    for table in tables:
        if not table.partitioned:
            names[_escape(table.name)] = None
            continue
        for relation in (table.name, *sorted(table.leaves)):
            names[_escape(relation.partition(".")[0]) + ".*"] = None
    return list(names)


def _escape(name: str) -> str:
    return name.replace("\\", "\\\\").replace(",", "\\,").replace(" ", "\\ ")


class Partitions:
    """The daemon's map from relation names in the stream to configured tables (used from the
    applier thread), and the copies of partitions new to it (threads of their own)."""

    def __init__(self, settings: Settings, tables: dict[str, TableInfo]) -> None:
        self.settings = settings
        self.tables = dict(tables)
        self.partitioned = any(t.partitioned for t in tables.values())
        self._filter = set(table_filter(self.tables.values()))
        self._routes = routes(self.tables.values())
        self._unrelated: dict[str, float] = {}
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._key = partitions_key(settings.postgres.slot)
        self._copies: dict[str, _LeafCopy] = {}
        self._stop = threading.Event()
        self._announced: set[str] = set()  # partitions gone, whose message is on its way
        self._gone: set[str] = set()  # partitions gone, whose message the stream brought

    # ----------------------------------------------------------------- resolving

    def routes_for(self, txns: Iterable[Transaction]) -> Mapping[str, TableInfo]:
        """The configured table of every relation `txns` change (resolving new ones). A
        message that a partition left its table becomes a TRUNCATE of that partition."""
        if not self.partitioned:
            return self._routes
        txns = list(txns)
        now = time.monotonic()
        names = {c.table for t in txns for c in t.changes} - self._routes.keys()
        unknown = [n for n in names if self._unrelated.get(n, 0.0) <= now]
        if unknown:
            self._resolve(unknown, now)
        gone: dict[str, TableInfo] = {}
        for txn in txns:
            if gone:  # after the message, the table it was is not ours
                txn.changes = [c for c in txn.changes if c.table not in gone]
            gone.update(self._gone_partitions(txn))
        if not gone:
            return self._routes
        self._routes = routes(self.tables.values())
        for leaf in gone:
            self._routes.pop(leaf, None)
            self._unrelated[leaf] = now + _UNRELATED_S
        return {**self._routes, **gone}  # this batch's TRUNCATEs of them

    def _gone_partitions(self, txn: Transaction) -> dict[str, TableInfo]:
        """The partitions `txn`'s messages say are gone, each made a TRUNCATE of it."""
        gone = {}
        for message in txn.messages:
            if message.prefix != GONE_PREFIX:
                continue
            name, _, leaf = message.content.partition("\n")
            table = self.tables.get(name)
            if table is None or not leaf:
                continue
            log.warning("table %s: partition %s was detached or dropped: removing its rows",
                        name, leaf, extra={"table": name})  # fmt: skip
            txn.changes.append(RowChange(Op.TRUNCATE, leaf))
            gone[leaf] = table
            self._gone.add(leaf)
        return gone

    def _resolve(self, names: list[str], now: float) -> None:
        found = partition_ancestors(self._connection(), names)
        for name in names:
            owner = next((a for a in found.get(name, []) if a in self.tables), None)
            if owner is None:
                self._unrelated[name] = now + _UNRELATED_S
            else:
                self._add_leaf(self.tables[owner], name)

    def _add_leaf(self, table: TableInfo, leaf: str) -> None:
        log.info("table %s: new partition %s", table.name, leaf, extra={"table": table.name})
        self.tables[table.name] = replace(table, leaves=table.leaves | {leaf})
        self._routes = routes(self.tables.values())
        self._unrelated.pop(leaf, None)

    def _connection(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.settings.postgres, "partitions")
        return self._conn

    def filter(self) -> list[str]:
        return table_filter(self.tables.values())

    # ----------------------------------------------------------------- new partitions

    def record_copied(self, client: redis.Redis) -> None:
        """Every partition known now was copied (the first copy of the tables)."""
        leaves: Fields = {leaf: t.name for t in self.tables.values() for leaf in t.leaves}
        if leaves:
            client.hset(self._key, mapping=leaves)

    def poll(self, client: redis.Redis, found: list[Target]) -> None:
        """Look for partitions new to the connector and copy them. Raises when a copy failed,
        or when a partition is in a schema the stream's table filter does not let through."""
        if not self.partitioned:
            return
        for leaf, copy in list(self._copies.items()):
            if copy.error is not None:
                raise copy.error
            if not copy.is_alive():
                del self._copies[leaf]
        conn = self._connection()
        if self._gone:  # their rows are removed once this batch is visible: forget them
            client.hdel(self._key, *self._gone)
            self._gone.clear()
        copied = {text(k): text(v) for k, v in client.hgetall(self._key).items()}
        for table in [t for t in self.tables.values() if t.partitioned]:
            now = partition_leaves(conn, table)
            for leaf in sorted(now - table.leaves):
                self._add_leaf(table, leaf)
            for leaf in sorted(
                self.tables[table.name].leaves - copied.keys() - self._copies.keys()
            ):
                self._copy(self.tables[table.name], leaf, found)
            gone = {leaf for leaf, name in copied.items() if name == table.name} - now
            self._announce_gone(table, gone - self._announced)
        outside = set(self.filter()) - self._filter
        if outside:
            raise ReplicationError(
                f"a partition is in a schema the stream does not read yet ({', '.join(outside)}):"
                " starting the stream again with it (the partition is copied from a snapshot)"
            )

    def _announce_gone(self, table: TableInfo, gone: set[str]) -> None:
        """Write a message for each partition gone from `table` into the WAL: the stream brings
        it after every change the partition had while it was one."""
        for leaf in sorted(gone):
            self._connection().execute(
                "SELECT pg_logical_emit_message(true, %s, %s)",
                [GONE_PREFIX, f"{table.name}\n{leaf}"],
            )
            self._announced.add(leaf)
            self.tables[table.name] = replace(table, leaves=table.leaves - {leaf})
            table = self.tables[table.name]

    def _copy(self, table: TableInfo, leaf: str, found: list[Target]) -> None:
        copy = _LeafCopy(self.settings, table, leaf, found, self._key, self._stop)
        copy.start()
        self._copies[leaf] = copy

    def close(self) -> None:
        self._stop.set()
        for copy in self._copies.values():
            copy.join(10)
        if self._conn is not None:
            self._conn.close()


class _LeafCopy(threading.Thread):
    """Copies one partition's rows from a fresh snapshot into every target, then records it."""

    def __init__(
        self,
        settings: Settings,
        table: TableInfo,
        leaf: str,
        found: list[Target],
        key: str,
        stop: threading.Event,
    ) -> None:
        super().__init__(name=f"connector-partition-{leaf}", daemon=True)
        self.settings = settings
        self.table = table
        self.leaf = leaf
        self.found = found
        self.key = key
        self.stop = stop
        self.error: BaseException | None = None

    def run(self) -> None:
        client = client_for(self.settings.redis)
        try:
            applier = Applier(client, self.settings, self.found[0].embedder, targets=self.found)
            copying = CopyOptions(self.stop, only=self.leaf)
            at, rows = copy_at_new_snapshot(
                self.settings, applier, [self.table], "partition", copying
            )
            client.hset(self.key, self.leaf, self.table.name)
            log.info("table %s: copied %d rows of partition %s as of %s", self.table.name,
                     rows, self.leaf, at, extra={"table": self.table.name})  # fmt: skip
        except Exception as exc:  # the daemon restarts, and copies it again
            if not self.stop.is_set():
                self.error = exc
                log.error("table %s: the copy of partition %s failed: %s", self.table.name,
                          self.leaf, redact(str(exc)))  # fmt: skip
        finally:
            client.close()

"""Garbage collection: removing row versions and chunk hashes no reader can need any more.

A version is superseded once a newer one is visible; a reader that read the previous visible LSN
may still be looking for it, so it is removed only once the visible LSN of `grace_s` ago (the
*settled* LSN) has passed its successor. Each step does a bounded amount of work, between the
applier's batches. Rows the applier superseded are collected from a queue; a background sweep
over every manifest and chunk hash of each index finds the rest: leftovers after a crash (chunk
hashes staged for a version that was never written), rows below a truncate or resync floor.

The applier hands over the rows each staged piece supersedes as it stages it (`staged`), not at
the flip: a transaction of millions of rows is staged in pieces, and its rows are not held in
memory until its commit. The collector holds at most `_MEMORY_ROWS` rows in memory; past that it
spills them to a Redis list under the index's prefix (`<prefix>:gc:<lsn>`), read back in
bounded steps once they are due, so its memory does not depend on the size of a transaction.

Its writes go out in pipelines cut by their Redis time (sink.pipes): deleting a chunk hash
removes it from the index on Redis's one thread, as long as a third of an insertion.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import redis

from connector.core.budget import WRITE_KIND, delete_kind
from connector.core.keys import Keyspace
from connector.core.lsn import Lsn
from connector.core.versions import Garbage, Manifest, floor_at, id_lsn, parse_floors
from connector.sink.pipes import Pipes, RedisBudget
from connector.sink.schema import IndexSpec

log = logging.getLogger(__name__)

_QUEUE_MAX = 100_000  # unlisted chunks the sweep remembers (to delete them on a later pass)
# Superseded rows held in memory (pending a flip, or their grace period); more go to Redis.
_MEMORY_ROWS = 10_000
_SPILL_TTL_S = 24 * 3600  # a spill a crash left behind goes by itself (the sweep finds its rows)
_SPILL_ROWS = 500  # spilled rows read back and collected per round trip
_SWEEP_COUNT = 200  # keys the sweep reads per step
_BUSY_SWEEP_S = 1.0  # while batches keep coming, a sweep step at most this often


@dataclass(frozen=True, slots=True)
class Retention:
    """How long what a reader may still need is kept: a superseded version, `grace_s` after
    its successor became visible; a deleted row's tombstone, `tombstone_ttl_s`."""

    grace_s: float
    tombstone_ttl_s: int


@dataclass(slots=True)
class GcStats:
    rows_collected: int = 0
    versions_removed: int = 0
    chunks_removed: int = 0
    sweeps: int = 0  # full passes of the sweep over every index


@dataclass(slots=True)
class _Spill:
    """Superseded rows of versions at `lsn` and below, in a Redis list (`table:key` entries)."""

    lsn: Lsn
    key: str
    keys: Keyspace
    rows: int = 0
    due: float | None = None  # when the flip made them current (None: not flipped yet)


class Collector:
    """Collects in the physical indexes `specs` (by index name), in bounded steps, from the
    visible LSN `visible` on; `staged` and `flipped` tell it what each piece superseded.
    Its pipelines are cut by `budget` (the target's writer's)."""

    def __init__(
        self,
        client: redis.Redis,
        specs: Mapping[str, IndexSpec],
        visible: Lsn,
        retention: Retention,
        budget: RedisBudget | None = None,
    ) -> None:
        self.client = client
        self.budget = budget or RedisBudget(2.0)
        self.grace_s = retention.grace_s
        self.tombstone_ttl_s = retention.tombstone_ttl_s
        self.spaces = {table: spec.keys for spec in specs.values() for table in spec.tables}
        self._indexes = [spec.keys for spec in specs.values()]
        self._history: deque[tuple[float, Lsn]] = deque([(time.monotonic(), visible)])
        self._queue: deque[tuple[float, str, str]] = deque()  # flipped: (when, table, key)
        self._pending: list[tuple[str, str]] = []  # staged, not flipped yet
        self._pending_lsn = Lsn(0)
        self._spills: dict[str, _Spill] = {}  # by Redis key, oldest first
        self._sweep = _Sweep(self._indexes)
        self._next_sweep = 0.0
        self._orphans: dict[str, float] = {}  # unlisted chunk -> when the sweep first saw it
        self.stats = GcStats()

    @property
    def backlog(self) -> int:
        """Superseded rows waiting for a flip or their grace period (or for the sweep)."""
        spilled = sum(spill.rows for spill in self._spills.values())
        return len(self._queue) + len(self._pending) + spilled

    def staged(self, lsn: Lsn, superseded: Iterable[tuple[str, str]]) -> None:
        """Versions at `lsn` (not visible yet) superseded these rows (table, key): they are
        collected once a flip has made them visible, and the grace period has passed."""
        self._pending.extend(superseded)
        self._pending_lsn = max(self._pending_lsn, lsn)
        if len(self._queue) + len(self._pending) > _MEMORY_ROWS:
            # Let go first: rows a failed spill (Redis full) loses are the sweep's to find.
            rows, self._pending = self._pending, []
            self._spill(self._pending_lsn, rows, None)

    def flipped(self, visible: Lsn, superseded: Iterable[tuple[str, str]] = ()) -> None:
        """The visible LSN moved to `visible`; what was staged up to it, and `superseded` rows
        (table, key), got a new version."""
        now = time.monotonic()
        self._history.append((now, visible))
        rows = list(superseded)
        if self._pending and self._pending_lsn <= visible:
            rows, self._pending = self._pending + rows, []
        if len(self._queue) + len(rows) > _MEMORY_ROWS:
            self._spill(visible, rows, now)
        else:
            self._queue.extend((now, table, key) for table, key in rows)
        for spill in self._spills.values():
            if spill.due is None and spill.lsn <= visible:
                spill.due = now

    def _spill(self, lsn: Lsn, rows: list[tuple[str, str]], due: float | None) -> None:
        """Append `rows` to their index's spill list for `lsn` in Redis."""
        by_space: dict[str, list[str]] = {}
        spaces: dict[str, Keyspace] = {}
        for table, key in rows:
            space = self.spaces.get(table)
            if space is not None:
                spaces[space.prefix] = space
                by_space.setdefault(space.prefix, []).append(f"{table}:{key}")
        with Pipes(self.client, self.budget) as out:
            for prefix, entries in by_space.items():
                name = f"{prefix}:gc:{lsn.value}"
                spill = self._spills.setdefault(name, _Spill(lsn, name, spaces[prefix]))
                spill.rows += len(entries)
                if due is not None and spill.due is None:
                    spill.due = due
                for start in range(0, len(entries), 1000):
                    out.add(WRITE_KIND).rpush(name, *entries[start : start + 1000])
                out.add(WRITE_KIND).expire(name, _SPILL_TTL_S)

    def settled(self) -> Lsn:
        """The visible LSN of `grace_s` ago: every reader has moved past it."""
        horizon = time.monotonic() - self.grace_s
        while len(self._history) > 1 and self._history[1][0] <= horizon:
            self._history.popleft()
        at, lsn = self._history[0]
        return lsn if at <= horizon else Lsn(0)

    def step(self, budget_s: float = 0.005, at_least: int = 0) -> int:
        """Collect for about `budget_s` of wall time, and at least `at_least` superseded rows
        that are due (so that collection keeps up with a steady stream of updates); returns
        the rows and chunks it looked at. A step with `at_least` (between busy batches) takes
        a step of the sweep only now and then."""
        settled = self.settled()
        if not settled:
            return 0
        deadline = time.monotonic() + budget_s
        horizon = time.monotonic() - self.grace_s
        done = 0
        while (
            self._queue
            and self._queue[0][0] <= horizon
            and (time.monotonic() < deadline or done < at_least)
        ):
            batch: list[tuple[str, str]] = []
            while self._queue and self._queue[0][0] <= horizon and len(batch) < 100:
                _at, table, key = self._queue.popleft()
                batch.append((table, key))
            done += self._collect_rows(batch, settled)
        done += self._collect_spilled(settled, horizon, deadline, at_least - done)
        now = time.monotonic()
        if now < deadline and (not at_least or now >= self._next_sweep):
            # Between busy batches the sweep (for leftovers, never urgent) takes a step at most
            # every _BUSY_SWEEP_S: each step costs a SCAN and reads, and latency is precious.
            self._next_sweep = now + _BUSY_SWEEP_S
            done += self._sweep_step(settled)
        return done

    # ----------------------------------------------------------------- rows

    def _collect_spilled(self, settled: Lsn, horizon: float, deadline: float, least: int) -> int:
        """Collect spilled rows that are due, a round trip of `_STEP_ROWS` at a time."""
        done = 0
        for spill in list(self._spills.values()):
            if spill.due is None or spill.due > horizon:
                continue
            while time.monotonic() < deadline or done < least:
                raw: list[bytes] = self.client.lpop(spill.key, _SPILL_ROWS) or []  # type: ignore[assignment]
                entries = [e.decode() for e in raw]
                rows = [(t, k) for t, _, k in (e.partition(":") for e in entries)]
                spill.rows = max(0, spill.rows - len(rows))
                done += self._collect_rows(rows, settled, spill.keys) if rows else 0
                if len(rows) < _SPILL_ROWS:  # emptied: Redis removed the list
                    del self._spills[spill.key]
                    break
            else:
                break
        return done

    def _collect_rows(
        self, rows: list[tuple[str, str]], settled: Lsn, keys: Keyspace | None = None
    ) -> int:
        """Collect `rows` (table, key); `keys` for tables no longer configured (the sweep)."""
        spaces: dict[str, Keyspace] = {}
        for table, _key in rows:
            space = self.spaces.get(table, keys)
            if space is not None:
                spaces[table] = space
        rows = [r for r in dict.fromkeys(rows) if r[0] in spaces]
        tables = sorted(spaces)
        read = self.client.pipeline(transaction=False)
        for table, key in rows:
            read.hgetall(spaces[table].row(table, key))
        for table in tables:
            read.hgetall(spaces[table].floor(table))
        replies = read.execute()
        floors = {
            t: floor_at(parse_floors(raw), settled)
            for t, raw in zip(tables, replies[len(rows) :], strict=True)
        }
        with Pipes(self.client, self.budget) as out:
            for (table, key), raw in zip(rows, replies[: len(rows)], strict=True):
                garbage = Manifest.parse(raw).collect(settled, floors[table])
                self._collect_row(out, spaces[table], table, key, garbage)
        return len(rows)

    def _collect_row(
        self, out: Pipes, keys: Keyspace, table: str, key: str, garbage: Garbage
    ) -> None:
        if not garbage and not garbage.tomb:
            return
        for chunk in garbage.chunks:
            out.add(delete_kind(keys.prefix)).unlink(keys.chunk(table, key, chunk))
        row = keys.row(table, key)
        if garbage.row_gone:
            out.add(WRITE_KIND).unlink(row)
        elif garbage.versions:
            out.add(WRITE_KIND).hdel(row, *(str(v.lsn.value) for v in garbage.versions))
        if garbage.tomb:  # NX: the sweep meets a tombstone again without making it younger
            out.add(WRITE_KIND).expire(row, self.tombstone_ttl_s, nx=True)
        if not garbage:
            return
        self.stats.rows_collected += 1
        self.stats.versions_removed += len(garbage.versions)
        self.stats.chunks_removed += len(garbage.chunks)

    # ----------------------------------------------------------------- the sweep

    def _sweep_step(self, settled: Lsn) -> int:
        """One bounded step of the sweep: the next manifests, or the next chunk hashes."""
        keys, kind, names = self._sweep.next(self.client)
        if self._sweep.finished_pass():
            self.stats.sweeps += 1
        if kind == "row" and names:
            self._collect_rows([_row_of(keys, name) for name in names], settled, keys)
        elif names:
            self._collect_orphans(keys, names, settled)
        return len(names)

    def _seen_before(self, unlisted: list[str]) -> list[str]:
        """The unlisted chunks already unlisted a while ago (five grace periods, at least 2 s).
        A copy (resync, a rebuild) stages chunks at an LSN readers may be past already, then
        their versions: a chunk seen once between the two is not an orphan."""
        now = time.monotonic()
        doomed = []
        for name in unlisted:
            first = self._orphans.setdefault(name, now)
            if now - first >= max(5 * self.grace_s, 2.0):
                doomed.append(name)
                del self._orphans[name]
        while len(self._orphans) > _QUEUE_MAX:
            self._orphans.pop(next(iter(self._orphans)))
        return doomed

    def _collect_orphans(self, keys: Keyspace, names: list[str], settled: Lsn) -> None:
        """Delete chunk hashes no version of their row lists, written before `settled`
        (staged for a version a crash kept from being written, or whose row is gone)."""
        chunks = [(name, *_chunk_of(keys, name)) for name in names]
        rows = list(dict.fromkeys((table, key) for _n, table, key, _c in chunks))
        read = self.client.pipeline(transaction=False)
        for table, key in rows:
            read.hgetall(keys.row(table, key))
        listed = {
            row: {c for v in Manifest.parse(raw).versions for c in v.chunks}
            for row, raw in zip(rows, read.execute(), strict=True)
        }
        unlisted = [
            name
            for name, table, key, chunk in chunks
            if chunk not in listed[(table, key)] and id_lsn(chunk) <= settled
        ]
        doomed = self._seen_before(unlisted)
        if doomed:
            with Pipes(self.client, self.budget) as out:
                for name in doomed:
                    out.add(delete_kind(keys.prefix)).unlink(name)
            self.stats.chunks_removed += len(doomed)


class _Sweep:
    """Where the sweep is: which index, manifests or chunk hashes, and the SCAN cursor."""

    def __init__(self, indexes: list[Keyspace]) -> None:
        self._indexes = indexes
        self._position = 0  # index * 2 + (0: manifests, 1: chunk hashes)
        self._scan: Iterator[bytes | str] | None = None  # SCAN is stateless: keep the cursor
        self._wrapped = False

    def next(self, client: redis.Redis) -> tuple[Keyspace, str, list[str]]:
        keys = self._indexes[self._position // 2]
        kind = "row" if self._position % 2 == 0 else "chunk"
        if self._scan is None:
            pattern = keys.row_pattern() if kind == "row" else f"{keys.chunk_prefix}*"
            self._scan = client.scan_iter(match=pattern, count=_SWEEP_COUNT)
        found = list(itertools.islice(self._scan, _SWEEP_COUNT))
        if len(found) < _SWEEP_COUNT:  # this scan is done: the next kind, or the next index
            self._scan = None
            self._position = (self._position + 1) % (2 * len(self._indexes))
            self._wrapped = self._position == 0
        return keys, kind, [k.decode() if isinstance(k, bytes) else k for k in found]

    def finished_pass(self) -> bool:
        wrapped, self._wrapped = self._wrapped, False
        return wrapped


def _row_of(keys: Keyspace, name: str) -> tuple[str, str]:
    table = keys.table_of_row(name)
    return table, keys.key_from_row(name, table)


def _chunk_of(keys: Keyspace, name: str) -> tuple[str, str, str]:
    """(table, row key, chunk id) of a chunk hash name."""
    rest = name.removeprefix(keys.chunk_prefix)
    table, _, rest = rest.partition(":")
    key, _, chunk = rest.rpartition(":")
    return table, key, chunk

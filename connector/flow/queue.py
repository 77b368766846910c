"""The queue between the reader and the applier: whole transactions (or pieces of large ones) and
idle marks, bounded by the row changes and by the bytes it holds (each item counts at least one
change and `MIN_ITEM_BYTES`). A run of idle marks and empty transactions (wal2json sends BEGIN and
COMMIT of every transaction of the database, also of tables nobody configured) coalesces into its
newest LSN, so however long the applier is paused (Redis full) they take one item."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from connector.core.changes import Transaction
from connector.core.lsn import Lsn


@dataclass(frozen=True, slots=True)
class Idle:
    """The server has sent everything up to `wal_end` and no transaction is open."""

    wal_end: Lsn


Item = Transaction | Idle
MIN_ITEM_BYTES = 256  # what an item costs at least (the objects holding it)


class ChangeQueue:
    """A FIFO bounded by the row changes and the bytes it holds (a huge transaction still fits
    alone, so it cannot wedge the stream)."""

    def __init__(self, max_changes: int, max_bytes: int = 64 << 20) -> None:
        self._items: deque[tuple[Item, int]] = deque()  # (item, its bytes)
        self._changes = 0
        self._bytes = 0
        self._max = max_changes
        self._max_bytes = max_bytes
        self._cond = threading.Condition()
        self._more_coming = False

    @staticmethod
    def _size(item: Item) -> int:
        """Changes it counts for: at least one."""
        return max(1, len(item.changes)) if isinstance(item, Transaction) else 1

    def _full_for(self, item: Item, size: int) -> bool:
        if not self._items:
            return False
        changes = self._changes + self._size(item)
        return changes > self._max or self._bytes + size > self._max_bytes

    def reading_transaction(self, inside: bool) -> None:
        """The reader is (or is no longer) in the middle of a transaction: its rest is on the
        way, so `take` may wait a moment for it."""
        self._more_coming = inside

    def put(self, item: Item, timeout_s: float, size: int = 0) -> bool:
        """Queue `item` (`size`: its bytes as received); False when the queue stayed full
        for `timeout_s`. An empty item after an empty item replaces it (its LSN is newer)."""
        size = max(size, MIN_ITEM_BYTES)
        with self._cond:
            if _empty(item) and self._items and _empty(self._items[-1][0]):
                _last, last_size = self._items.pop()
                self._bytes -= last_size
                self._changes -= 1
                item = Idle(_lsn(item))
            elif self._full_for(item, size):
                self._cond.wait(timeout_s)
                if self._full_for(item, size):
                    return False
            self._items.append((item, size))
            self._changes += self._size(item)
            self._bytes += size
            self._cond.notify_all()
            return True

    def take(self, max_rows: int, max_wait_s: float, timeout_s: float) -> list[Item]:
        """The next batch: waits up to `timeout_s` for a first item, then takes what is queued,
        up to `max_rows` changes. It waits up to `max_wait_s` for more only while the reader is
        inside a transaction whose rest is on its way; a lone commit goes out at once."""
        batch: list[Item] = []
        rows = 0
        with self._cond:
            if not self._items:
                self._cond.wait(timeout_s)
            deadline = time.monotonic() + max_wait_s
            while self._items or (batch and rows < max_rows and self._more_coming):
                if not self._items:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not self._cond.wait(remaining):
                        break
                    continue
                if batch and _partial(self._items[0][0]):
                    break  # a piece of a large transaction goes alone
                item, size = self._items.popleft()
                batch.append(item)
                rows += self._size(item)
                self._changes -= self._size(item)
                self._bytes -= size
                if rows >= max_rows or _partial(item):
                    break
            self._cond.notify_all()
        return batch

    def __len__(self) -> int:
        return len(self._items)

    def oldest_commit_time(self) -> float | None:
        """Commit time (epoch seconds) of the oldest queued transaction, if it has one."""
        with self._cond:
            for item, _size in self._items:
                if isinstance(item, Transaction) and item.commit_time is not None:
                    return item.commit_time.timestamp()
        return None


def _partial(item: Item) -> bool:
    return isinstance(item, Transaction) and item.partial


def _empty(item: Item) -> bool:
    """An idle mark, or a whole transaction with nothing for the applier but its LSN."""
    if isinstance(item, Idle):
        return True
    return not (item.changes or item.messages or item.partial or item.continued)


def _lsn(item: Item) -> Lsn:
    return item.wal_end if isinstance(item, Idle) else item.commit_lsn

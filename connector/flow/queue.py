"""The queue between the reader and the applier: whole transactions and idle marks, bounded by
the number of row changes it holds."""

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


class ChangeQueue:
    """A FIFO bounded by the number of row changes it holds (a huge transaction still fits
    alone, so it cannot wedge the stream)."""

    def __init__(self, max_changes: int) -> None:
        self._items: deque[Item] = deque()
        self._changes = 0
        self._max = max_changes
        self._cond = threading.Condition()
        self._more_coming = False

    @staticmethod
    def _size(item: Item) -> int:
        return len(item.changes) if isinstance(item, Transaction) else 0

    def reading_transaction(self, inside: bool) -> None:
        """The reader is (or is no longer) in the middle of a transaction: its rest is on the
        way, so `take` may wait a moment for it."""
        self._more_coming = inside

    def put(self, item: Item, timeout_s: float) -> bool:
        with self._cond:
            if self._items and self._changes + self._size(item) > self._max:
                self._cond.wait(timeout_s)
                if self._items and self._changes + self._size(item) > self._max:
                    return False
            self._items.append(item)
            self._changes += self._size(item)
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
                if batch and _partial(self._items[0]):
                    break  # a piece of a large transaction goes alone
                item = self._items.popleft()
                batch.append(item)
                rows += self._size(item)
                self._changes -= self._size(item)
                if rows >= max_rows or _partial(item):
                    break
            self._cond.notify_all()
        return batch

    def __len__(self) -> int:
        return len(self._items)

    def oldest_commit_time(self) -> float | None:
        """Commit time (epoch seconds) of the oldest queued transaction, if it has one."""
        with self._cond:
            for item in self._items:
                if isinstance(item, Transaction) and item.commit_time is not None:
                    return item.commit_time.timestamp()
        return None


def _partial(item: Item) -> bool:
    return isinstance(item, Transaction) and item.partial

"""The bounded queue between the replication reader and the applier (backpressure)."""

import threading
import time

from connector.core.changes import Message, Op, RowChange, Transaction
from connector.core.lsn import Lsn
from connector.flow.queue import ChangeQueue, Idle


def txn(lsn: int, rows: int) -> Transaction:
    return Transaction(lsn, Lsn(lsn), None, [RowChange(Op.INSERT, "t")] * rows)


def test_put_blocks_when_full_and_resumes_when_taken() -> None:
    queue = ChangeQueue(max_changes=10)
    assert queue.put(txn(1, 8), timeout_s=0.01)
    assert not queue.put(txn(2, 8), timeout_s=0.01)  # would exceed the bound: the reader waits
    batch = queue.take(max_rows=100, max_wait_s=0.0, timeout_s=0.01)
    assert [t.commit_lsn for t in batch if isinstance(t, Transaction)] == [Lsn(1)]
    assert queue.put(txn(2, 8), timeout_s=0.01)


def test_a_transaction_larger_than_the_bound_still_passes_alone() -> None:
    queue = ChangeQueue(max_changes=10)
    assert queue.put(txn(1, 50), timeout_s=0.01)
    assert len(queue.take(max_rows=5, max_wait_s=0.0, timeout_s=0.01)) == 1


def test_take_bounds_batches_by_rows_and_keeps_order() -> None:
    queue = ChangeQueue(max_changes=1000)
    for i in range(1, 11):
        queue.put(txn(i, 10), timeout_s=0.01)
    queue.put(Idle(Lsn(99)), timeout_s=0.01)
    first = queue.take(max_rows=30, max_wait_s=0.0, timeout_s=0.01)
    assert [t.commit_lsn for t in first if isinstance(t, Transaction)] == [Lsn(1), Lsn(2), Lsn(3)]
    rest = queue.take(max_rows=1000, max_wait_s=0.0, timeout_s=0.01)
    assert len(rest) == 8 and rest[-1] == Idle(Lsn(99))


def test_take_waits_the_window_only_while_a_transaction_is_on_its_way() -> None:
    queue = ChangeQueue(max_changes=1000)
    queue.reading_transaction(True)
    queue.put(txn(1, 1), timeout_s=0.01)
    later = threading.Timer(0.02, lambda: queue.put(txn(2, 1), timeout_s=0.01))
    later.start()
    batch = queue.take(max_rows=10, max_wait_s=0.5, timeout_s=0.01)
    later.join()
    assert len(batch) == 2


def test_a_lone_commit_is_taken_at_once() -> None:
    queue = ChangeQueue(max_changes=1000)
    queue.put(txn(1, 1), timeout_s=0.01)
    started = time.monotonic()
    batch = queue.take(max_rows=10, max_wait_s=0.5, timeout_s=0.01)
    assert len(batch) == 1
    assert time.monotonic() - started < 0.1  # not the 0.5 s window


def test_runs_of_empty_transactions_and_keepalives_coalesce_into_the_newest_lsn() -> None:
    queue = ChangeQueue(max_changes=10)
    assert queue.put(txn(1, 2), timeout_s=0.01)
    for lsn in range(2, 100_000):  # other tables' BEGIN/COMMIT while the applier is paused
        item = txn(lsn, 0) if lsn % 3 else Idle(Lsn(lsn))
        assert queue.put(item, timeout_s=0.0)  # never full: one item holds the run
    assert len(queue) == 2
    batch = queue.take(max_rows=100, max_wait_s=0.0, timeout_s=0.01)
    assert batch[-1] == Idle(Lsn(99_999))


def test_every_item_counts_and_bytes_bound_the_queue() -> None:
    queue = ChangeQueue(max_changes=1000, max_bytes=1 << 20)
    assert queue.put(txn(1, 1), timeout_s=0.01, size=600 << 10)
    assert not queue.put(txn(2, 1), timeout_s=0.01, size=600 << 10)  # bytes, not changes
    counted = ChangeQueue(max_changes=3)
    heartbeat = Transaction(None, Lsn(5), None, [], messages=[Message("p", "", False)])
    assert all(counted.put(heartbeat, timeout_s=0.01) for _ in range(3))
    assert not counted.put(heartbeat, timeout_s=0.01)  # an item with no change counts one

"""The bounded queue between the replication reader and the applier (backpressure)."""

import threading
import time

from connector.core.changes import Op, RowChange, Transaction
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

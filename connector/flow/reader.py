"""The reader thread: it owns the replication connection, decodes wal2json records, assembles
whole transactions and queues them (backpressure: it stops reading while the queue is full, still
sending status updates so the server does not time it out), and sends the confirmed LSN back."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from connector.core.lsn import Lsn
from connector.core.wal2json import TransactionAssembler, decode
from connector.errors import ReplicationError
from connector.flow.queue import ChangeQueue, Idle, Item
from connector.source.replication import Keepalive, ReplicationConnection


class Reader(threading.Thread):
    """Reads the slot, assembles transactions, queues them; sends the confirmed LSN back."""

    def __init__(
        self,
        repl: ReplicationConnection,
        queue: ChangeQueue,
        stop: threading.Event,
        confirmable: Callable[[], Lsn],
        piece_rows: int | None = None,
        encoding: str = "utf-8",
        piece_bytes: int | None = None,
        columns: Mapping[str, frozenset[str]] | None = None,
    ):
        super().__init__(name="connector-reader", daemon=True)
        self.repl = repl
        self.queue = queue
        self.stop = stop
        self.confirmable = confirmable
        self.piece_rows = piece_rows
        self.piece_bytes = piece_bytes
        self.columns = columns  # per relation, the columns kept (core.wal2json.decode)
        self.encoding = encoding  # the Python codec of the database's encoding
        self.error: BaseException | None = None

    def run(self) -> None:
        assembler = TransactionAssembler(self.piece_rows, self.piece_bytes)
        timeout_s = self.repl.settings.stream_timeout_s
        last_message = time.monotonic()
        try:
            while not self.stop.is_set():
                received = 0
                if time.monotonic() - last_message > timeout_s:
                    raise ReplicationError(
                        f"no message from the server on slot {self.repl.slot} for {timeout_s:.0f}s "
                        "(postgres.stream_timeout_s): the connection is dead; reconnecting"
                    )
                for message in self.repl.read(timeout_s=0.25):
                    if self.stop.is_set():
                        # Under a writer the stream never runs dry: without this the reader
                        # would read on (and wait on a queue nobody takes from) after a stop.
                        # What it leaves unread is read again from the slot.
                        break
                    last_message = time.monotonic()
                    received += 1
                    if isinstance(message, Keepalive):
                        if not assembler.in_transaction:
                            self._put(Idle(message.wal_end))
                        continue
                    record = decode(message.payload, message.lsn, self.encoding, self.columns)
                    txn = assembler.feed(record, len(message.payload))
                    self.queue.reading_transaction(assembler.in_transaction)
                    if txn is not None:
                        self._put(txn, assembler.handed_bytes)
                self.repl.confirm(self.confirmable())
                # When the stream is quiet, ask the server how far it has read: its keepalive
                # lets the checkpoint (and the slot) move past WAL that holds no change of ours.
                self.repl.send_status(reply=received == 0 and not assembler.in_transaction)
        except BaseException as exc:  # handed to the applier, which decides
            self.error = exc
            self.stop.set()

    def _put(self, item: Item, size: int = 0) -> None:
        # A full queue is waited on in short steps: a stop is seen within one of them.
        while not self.queue.put(item, timeout_s=0.1, size=size):
            self.repl.confirm(self.confirmable())
            self.repl.send_status()  # keep the server from timing us out while we wait
            if self.stop.is_set():
                return

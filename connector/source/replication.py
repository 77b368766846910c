"""The streaming replication client, on psycopg's libpq layer (`psycopg.pq`).

psycopg 3 has no replication API of its own, but its `pq` layer speaks the protocol: a
`replication=database` connection runs `CREATE_REPLICATION_SLOT` / `START_REPLICATION`, and the
COPY_BOTH stream carries XLogData ('w') and keepalives ('k') one way and standby status updates
('r') the other. Reads block on the socket (select) with a timeout; nothing sleep-polls.
"""

from __future__ import annotations

import logging
import select
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
from psycopg import pq
from psycopg.abc import Buffer

from connector.config import PostgresSettings
from connector.core.lsn import Lsn
from connector.errors import ReplicationError
from connector.source.connection import conninfo

log = logging.getLogger(__name__)

# Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01).
_PG_EPOCH_US = 946_684_800_000_000
_XLOGDATA = struct.Struct("!QQQ")
_KEEPALIVE = struct.Struct("!QQB")
_STATUS = struct.Struct("!cQQQQB")


def describe_dsn(settings: PostgresSettings) -> str:
    """host:port/dbname of the DSN, for messages (never the password)."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(settings.dsn.get_secret_value())
    except psycopg.ProgrammingError:
        return "(unparsable postgres.dsn)"
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


@dataclass(frozen=True, slots=True)
class XLogData:
    """One wal2json record and the WAL position the server sent it at."""

    lsn: Lsn
    payload: bytes


@dataclass(frozen=True, slots=True)
class Keepalive:
    """The server's current WAL end: everything before it has been sent."""

    wal_end: Lsn


def wal2json_options(tables: list[str]) -> dict[str, str]:
    """The plugin options: format-version 2, LSNs, timestamps, keys, only the configured tables."""
    return {
        "format-version": "2",
        "include-xids": "1",
        "include-lsn": "1",
        "include-timestamp": "1",
        "include-pk": "1",
        "include-types": "1",
        "add-tables": ",".join(tables),
    }


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class ReplicationConnection:
    """A `replication=database` connection: slot management and the COPY_BOTH stream."""

    def __init__(self, settings: PostgresSettings, slot: str | None = None) -> None:
        self.settings = settings
        self.slot = (slot or settings.slot)[:63]  # NAMEDATALEN
        self._conn: pq.abc.PGconn | None = None
        self._streaming = False
        self.flush_lsn = Lsn(0)
        self._last_status = 0.0

    # ----------------------------------------------------------------- connection

    def connect(self) -> None:
        info = conninfo(self.settings, replication="database")
        conn = pq.PGconn.connect(info.encode())
        if conn.status != pq.ConnStatus.OK:
            message = conn.get_error_message()
            conn.finish()
            raise ReplicationError(
                f"cannot open a replication connection to {describe_dsn(self.settings)}: "
                f"{message.strip()} (the role needs LOGIN REPLICATION and a pg_hba.conf line "
                "that allows replication connections)"
            )
        self._conn = conn

    @property
    def conn(self) -> pq.abc.PGconn:
        if self._conn is None:
            raise ReplicationError("replication connection is not open")
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.finish()
            self._conn = None
            self._streaming = False

    def __enter__(self) -> ReplicationConnection:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _command(self, sql: str) -> list[list[str | None]]:
        result = self.conn.exec_(sql.encode())
        if result.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
            message = (result.error_message or b"").decode(errors="replace").strip()
            raise ReplicationError(f"{sql.split()[0]} on slot {self.slot} failed: {message}")
        rows: list[list[str | None]] = []
        for row in range(result.ntuples):
            values = []
            for col in range(result.nfields):
                value = result.get_value(row, col)
                values.append(value.decode() if value is not None else None)
            rows.append(values)
        return rows

    # ----------------------------------------------------------------- slots

    def identify_system(self) -> tuple[str, int, Lsn]:
        """(database system identifier, timeline, current WAL flush position)."""
        systemid, timeline, xlogpos, _db = self._command("IDENTIFY_SYSTEM")[0]
        return str(systemid), int(timeline or 0), Lsn.parse(xlogpos or "0/0")

    def timeline_history(self, timeline: int) -> str | None:
        """The history file of `timeline` (`TIMELINE_HISTORY`): its ancestors and where each
        ended (core.history). None when the server has none (timeline 1 never has one)."""
        if timeline <= 1:
            return None
        try:
            rows = self._command(f"TIMELINE_HISTORY {int(timeline)}")
        except ReplicationError as exc:
            if self.conn.status != pq.ConnStatus.OK:
                raise  # the connection broke: retried, not taken for a missing history
            log.warning("the server has no history of timeline %d: %s", timeline, exc)
            return None
        return rows[0][1] if rows else None

    def create_slot(self, export_snapshot: bool, temporary: bool = False) -> tuple[Lsn, str | None]:
        """Create the wal2json slot; returns (consistent point, exported snapshot name).

        The snapshot stays valid until the next command on this connection: copy the tables
        with it first, then call `start()`. A temporary slot goes when the connection closes.
        """
        mode = "EXPORT_SNAPSHOT" if export_snapshot else "NOEXPORT_SNAPSHOT"
        kind = "TEMPORARY LOGICAL" if temporary else "LOGICAL"
        row = self._command(f"CREATE_REPLICATION_SLOT {self.slot} {kind} wal2json {mode}")[0]
        log.info("created replication slot %s at %s", self.slot, row[1])
        return Lsn.parse(row[1] or "0/0"), row[2]

    # ----------------------------------------------------------------- streaming

    def start(self, start_lsn: Lsn, tables: list[str]) -> None:
        options = ", ".join(
            f'"{name}" {_quote_literal(value)}' for name, value in wal2json_options(tables).items()
        )
        sql = f"START_REPLICATION SLOT {self.slot} LOGICAL {start_lsn} ({options})"
        self.conn.send_query(sql.encode())
        self.conn.flush()
        result = self._next_result(10.0)
        if result is None or result.status != pq.ExecStatus.COPY_BOTH:
            message = (result.error_message if result else b"no answer").decode(errors="replace")
            raise ReplicationError(
                f"START_REPLICATION on slot {self.slot} at {start_lsn} failed: {message.strip()}"
            )
        self.conn.nonblocking = 1
        self._streaming = True
        log.info("streaming slot %s from %s", self.slot, start_lsn)

    def _next_result(self, timeout_s: float) -> pq.abc.PGresult | None:
        deadline = time.monotonic() + timeout_s
        while self.conn.is_busy():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ReplicationError(f"no answer from the server within {timeout_s}s")
            select.select([self.conn.socket], [], [], remaining)
            self.conn.consume_input()
        return self.conn.get_result()

    def read(self, timeout_s: float) -> Iterator[XLogData | Keepalive]:
        """Messages available within `timeout_s` (blocking on the socket, not sleeping)."""
        conn = self.conn
        waited = False
        while True:
            nbytes, data = conn.get_copy_data(1)
            if nbytes > 0:
                message = self._parse(data)
                # The driver's buffer is as large as the message (a 50 MB row: 50 MB): let it
                # go before the message is decoded, not at the next one.
                del data
                if message is not None:
                    yield message
                continue
            if nbytes == -1:
                self._raise_stream_end()
            if nbytes < -1:
                raise ReplicationError(
                    f"replication stream of slot {self.slot} failed: "
                    f"{conn.get_error_message().strip()}"
                )
            if waited:
                return
            readable, _, _ = select.select([conn.socket], [], [], timeout_s)
            waited = True
            if readable:
                conn.consume_input()

    def _raise_stream_end(self) -> None:
        result = self.conn.get_result()
        message = ""
        if result is not None and result.error_message:
            message = result.error_message.decode(errors="replace").strip()
        raise ReplicationError(
            f"the server ended the replication stream of slot {self.slot}: "
            f"{message or 'no reason given'}"
        )

    def _parse(self, data: Buffer) -> XLogData | Keepalive | None:
        """One message of the stream; its payload is the only copy made of it."""
        kind = bytes(data[:1])
        if kind == b"w":
            start, _end, _time = _XLOGDATA.unpack_from(data, 1)
            return XLogData(Lsn(start), bytes(memoryview(data)[1 + _XLOGDATA.size :]))
        if kind == b"k":
            wal_end, _time, reply = _KEEPALIVE.unpack_from(data, 1)
            if reply:
                self.send_status(force=True)
            return Keepalive(Lsn(wal_end))
        log.warning("ignoring unknown replication message type %r", kind)
        return None

    def confirm(self, lsn: Lsn) -> None:
        """Allow the server to release WAL up to `lsn` (sent with the next status update)."""
        if lsn > self.flush_lsn:
            self.flush_lsn = lsn

    def send_status(
        self, force: bool = False, interval_s: float = 1.0, reply: bool = False
    ) -> None:
        """Standby status update: written = flushed = applied = the confirmed LSN. With
        `reply`, the server answers at once with a keepalive carrying how far it has sent."""
        now = time.monotonic()
        if not force and now - self._last_status < interval_s:
            return
        lsn = self.flush_lsn.value
        clock = int(time.time() * 1_000_000) - _PG_EPOCH_US
        message = _STATUS.pack(b"r", lsn, lsn, lsn, clock, 1 if reply else 0)
        if self.conn.put_copy_data(message) != 1:
            raise ReplicationError(
                f"cannot send a status update on slot {self.slot}: "
                f"{self.conn.get_error_message().strip()}"
            )
        self.conn.flush()
        self._last_status = now

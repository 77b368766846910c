"""wal2json format-version 2 records -> the change model, and records -> transactions (pure).

One replication message carries one JSON record (the slot runs with format-version=2,
include-lsn=1, include-timestamp=1, include-pk=1, include-xids=1). This is the hot path of the
connector, so it is plain dict access on `json` output: no validation library.

Things wal2json does that shape this module (checked against wal2json on PostgreSQL 15):

- Numbers are printed as bare JSON numbers in PostgreSQL's own text ("3.10", "1e-05",
  "2.25e+300"). They are parsed as str, not Decimal or float, so the text is kept exactly:
  `Decimal("1e-05")` would print "0.00001", and huge integers would trip int's digit limit.
- NaN and +-Infinity of numeric, real and double precision columns arrive as JSON null: wal2json
  cannot tell them from NULL, and neither can we.
- bytea is printed as hex *without* the leading `\\x`; it is put back so the text equals
  `col::text` from the initial snapshot.
- An UPDATE leaves out unchanged TOASTed columns entirely: they are absent from `new`.
- The commit record's "lsn" is where the commit record starts; the XLogData header of that
  message (and "nextlsn") is its end, which is the position to confirm and checkpoint: a restart
  from the start would receive the transaction again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from connector.core.changes import Begin, Commit, Message, Op, Record, Row, RowChange, Transaction
from connector.core.lsn import Lsn
from connector.core.pgtypes import PgValue, pg_text, typed_value
from connector.errors import ConfigError, ReplicationError

__all__ = ["TransactionAssembler", "decode"]

_JSON = json.JSONDecoder(parse_float=str, parse_int=str)
_OPS = {"I": Op.INSERT, "U": Op.UPDATE, "D": Op.DELETE, "T": Op.TRUNCATE}
_MISSING: Any = object()
_EXCERPT = 200


def decode(
    payload: bytes | bytearray | memoryview | str,
    wal_lsn: Lsn | None = None,
    encoding: str = "utf-8",
    columns: Mapping[str, frozenset[str]] | None = None,
) -> Record:
    """Decode one wal2json format-version 2 record.

    `wal_lsn` is the WAL position from the XLogData header that carried the record. A Commit
    takes it as its LSN (else the record's "nextlsn", else "lsn"); the other records take their
    own "lsn" and fall back to it. `encoding` is the Python codec of the database's encoding:
    wal2json prints values in it (the stream is not converted to a client encoding). Raises
    ReplicationError on anything that is not a record. With `columns` (table -> the columns
    it reads), a change of a listed table keeps only those (in its new row and its old
    identity): a blob or an HTML column nobody configured goes at once, not through the queue.
    """
    record = _parse(payload, encoding, wal_lsn)
    action: Any = record.get("action")
    try:
        op = _OPS.get(action)
        if op is not None:
            return _row_change(record, op, wal_lsn, columns)
        if action == "B":
            return _begin(record, wal_lsn)
        if action == "C":
            return _commit(record, wal_lsn, payload)
        if action == "M":
            return _message(record, wal_lsn)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ReplicationError(
            f"malformed wal2json {action!r} record ({type(exc).__name__}: {exc}): "
            f"{_excerpt(payload)}"
        ) from exc
    raise ReplicationError(
        f"unknown wal2json action {action!r} (expected B, C, I, U, D, T or M; is the slot "
        f"read with format-version=2?): {_excerpt(payload)}"
    )


def _parse(
    payload: bytes | bytearray | memoryview | str, encoding: str, wal_lsn: Lsn | None
) -> dict[str, Any]:
    try:
        text = payload if isinstance(payload, str) else bytes(payload).decode(encoding)
    except UnicodeDecodeError as exc:
        # The server checks what it stores against its encoding: only a SQL_ASCII database
        # (whose bytes postgres.sql_ascii_encoding declares) gets here. Retrying cannot help.
        raise ConfigError(
            f"the wal2json record at {wal_lsn} is not valid {encoding} ({exc}): set "
            'postgres.sql_ascii_encoding to the encoding the applications write ("LATIN1" '
            f"reads every byte): {_excerpt(payload)}"
        ) from None
    try:
        record = _JSON.decode(text)
    except ValueError as exc:
        raise ReplicationError(
            f"malformed wal2json record, not JSON ({exc}): {_excerpt(payload)}"
        ) from None
    if not isinstance(record, dict):
        raise ReplicationError(f"malformed wal2json record, not an object: {_excerpt(payload)}")
    return record


def _excerpt(payload: bytes | bytearray | memoryview | str) -> str:
    """The beginning of a payload, for error messages."""
    head = payload[:_EXCERPT]
    text = head if isinstance(head, str) else bytes(head).decode("utf-8", "replace")
    return repr(text) + ("..." if len(payload) > _EXCERPT else "")


def _row(columns: list[dict[str, Any]] | None, wanted: frozenset[str] | None = None) -> Row:
    """Column objects -> {name: PgValue}; a column without a value is left out, never NULL,
    and so is one not `wanted` (None: every column)."""
    row: dict[str, PgValue] = {}
    if not columns:
        return row
    for column in columns:
        value = column.get("value", _MISSING)
        if value is _MISSING or (wanted is not None and column["name"] not in wanted):
            continue
        type_name = column["type"]
        if value.__class__ is not str:
            value = pg_text(value)
        elif type_name == "bytea":
            value = "\\x" + value
        row[column["name"]] = PgValue(value, type_name)
    return row


def _lsn(record: dict[str, Any], key: str = "lsn") -> Lsn | None:
    text = record.get(key)
    return Lsn.parse(text) if text else None


def _xid(record: dict[str, Any]) -> int | None:
    xid = record.get("xid")
    return None if xid is None else int(xid)


def _timestamp(record: dict[str, Any]) -> datetime | None:
    value = typed_value(record.get("timestamp"), "timestamp with time zone")
    return value if isinstance(value, datetime) else None


def _row_change(
    record: dict[str, Any],
    op: Op,
    wal_lsn: Lsn | None,
    columns: Mapping[str, frozenset[str]] | None,
) -> RowChange:
    table = f"{record['schema']}.{record['table']}"
    wanted = columns.get(table) if columns else None
    return RowChange(
        op=op,
        table=table,
        new=_row(record.get("columns"), wanted),
        old=_row(record.get("identity"), wanted),
        lsn=_lsn(record) or wal_lsn,
    )


def _begin(record: dict[str, Any], wal_lsn: Lsn | None) -> Begin:
    return Begin(
        xid=_xid(record),
        lsn=_lsn(record) or wal_lsn,
        timestamp=_timestamp(record),
        commit_lsn=_lsn(record, "nextlsn"),
    )


def _commit(
    record: dict[str, Any], wal_lsn: Lsn | None, payload: bytes | bytearray | memoryview | str
) -> Commit:
    lsn = wal_lsn or _lsn(record, "nextlsn") or _lsn(record)
    if lsn is None:
        raise ReplicationError(
            "wal2json commit record without an LSN (read the slot with include-lsn=1, or pass "
            f"the XLogData position): {_excerpt(payload)}"
        )
    return Commit(xid=_xid(record), lsn=lsn, timestamp=_timestamp(record))


def _message(record: dict[str, Any], wal_lsn: Lsn | None) -> Message:
    return Message(
        prefix=record["prefix"],
        content=record.get("content") or "",
        transactional=bool(record.get("transactional")),
        lsn=_lsn(record) or wal_lsn,
    )


class TransactionAssembler:
    """Collects decoded records into whole committed transactions.

    Changes are held until their Commit; with `piece_rows`, a transaction that grows past it
    (or past `piece_bytes` of records, as `feed` is told their sizes) is handed over in pieces
    (`partial`), the last one with the Commit; `handed_bytes` is the size of the last one.
    A non-transactional message outside a transaction (a heartbeat) is returned at once as an
    empty transaction at the message's LSN, so the position can advance on an idle database.
    """

    __slots__ = (
        "_begin", "_bytes", "_changes", "_handed", "_messages", "_piece_bytes", "_piece_rows",
        "handed_bytes",
    )  # fmt: skip

    def __init__(self, piece_rows: int | None = None, piece_bytes: int | None = None) -> None:
        self._piece_rows = piece_rows
        self._piece_bytes = piece_bytes
        self._begin: Begin | None = None
        self._changes: list[RowChange] = []
        self._messages: list[Message] = []
        self._handed = False  # pieces of the open transaction were handed over
        self._bytes = 0  # of the records held
        self.handed_bytes = 0

    @property
    def in_transaction(self) -> bool:
        """True between a Begin and its Commit."""
        return self._begin is not None

    def reset(self) -> None:
        """Forget a partly received transaction (the stream restarted: it will be resent)."""
        self._begin = None
        self._changes = []
        self._messages = []
        self._handed = False
        self._bytes = 0

    def feed(self, record: Record, size: int = 0) -> Transaction | None:
        """Take one record (`size`: its bytes as received); return the transaction it
        completes, if any."""
        self._bytes += size
        if isinstance(record, RowChange):
            self._changes.append(record)
            return self._piece() if self._piece_rows else None
        if isinstance(record, Message):
            return self._message(record)
        if isinstance(record, Begin):
            self.reset()  # a Begin inside a transaction: the old one was never committed
            self._begin = record
            return None
        return self._commit(record)

    def _message(self, message: Message) -> Transaction | None:
        if message.transactional or self.in_transaction:
            self._messages.append(message)
            return None
        if message.lsn is None:
            return None
        self.handed_bytes, self._bytes = self._bytes, 0
        return Transaction(
            xid=None, commit_lsn=message.lsn, commit_time=None, changes=[], messages=[message]
        )

    def _piece(self) -> Transaction | None:
        """A piece of the open transaction once it holds `piece_rows` changes (when its BEGIN
        said where it commits), so no transaction has to fit in memory whole."""
        begin = self._begin
        rows, size = self._piece_rows, self._piece_bytes
        if rows is None or (len(self._changes) < rows and (size is None or self._bytes < size)):
            return None
        if begin is None or begin.commit_lsn is None:
            return None
        piece = Transaction(
            xid=begin.xid,
            commit_lsn=begin.commit_lsn,
            commit_time=begin.timestamp,
            changes=self._changes,
            partial=True,
            continued=self._handed,
        )
        self._changes = []
        self._handed = True
        self.handed_bytes, self._bytes = self._bytes, 0
        return piece

    def _commit(self, commit: Commit) -> Transaction:
        begin = self._begin
        xid = commit.xid if commit.xid is not None or begin is None else begin.xid
        commit_time = commit.timestamp or (begin.timestamp if begin else None)
        transaction = Transaction(
            xid=xid,
            commit_lsn=commit.lsn,
            commit_time=commit_time,
            changes=self._changes,
            messages=self._messages,
            continued=self._handed,
        )
        size = self._bytes
        self.reset()
        self.handed_bytes = size
        return transaction

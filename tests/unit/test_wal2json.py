"""Decoding wal2json format-version 2 records, and assembling them into transactions.

The payloads are what wal2json 2.5 on PostgreSQL 15 printed for `pg_logical_slot_get_changes`
with format-version=2, include-lsn=1, include-timestamp=1, include-pk=1, include-xids=1 (long
values shortened). The LSN column of that call, which is the XLogData position in a stream, is
noted next to each.
"""

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from connector.core.changes import Begin, Commit, Message, Op, RowChange, Transaction
from connector.core.lsn import Lsn
from connector.core.pgtypes import PgValue
from connector.core.wal2json import TransactionAssembler, decode
from connector.errors import ConfigError, ReplicationError

PST = timezone(timedelta(hours=-8))

# XLogData 0/1508708
BEGIN = (
    '{"action":"B","xid":727,"timestamp":"2026-11-25 14:54:02.405955-08",'
    '"lsn":"0/150B458","nextlsn":"0/150B488"}'
)
# XLogData 0/150B1A8
INSERT = (
    r'{"action":"I","xid":727,"timestamp":"2026-11-25 14:54:02.405955-08","lsn":"0/150B1A8",'
    r'"schema":"public","table":"t","columns":[{"name":"id","type":"integer","value":1},'
    r'{"name":"i2","type":"smallint","value":2},{"name":"i8","type":"bigint","value":9000000000},'
    r'{"name":"n","type":"numeric","value":12345678901234567890.123456789},'
    r'{"name":"n2","type":"numeric(10,2)","value":3.10},{"name":"r","type":"real","value":1.5},'
    r'{"name":"d","type":"double precision","value":2.25e+300},'
    r'{"name":"f","type":"double precision","value":1e-05},'
    r'{"name":"b","type":"boolean","value":true},'
    r'{"name":"tx","type":"text","value":"hé \"x\" \\ y"},'
    r'{"name":"vc","type":"character varying(20)","value":"abc"},'
    r'{"name":"u","type":"uuid","value":"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},'
    r'{"name":"j","type":"json","value":"{\"a\": [1, 2.5]}"},'
    r'{"name":"jb","type":"jsonb","value":"{\"b\": null}"},'
    r'{"name":"tz","type":"timestamp with time zone","value":"2024-01-01 19:04:05.123456-08"},'
    r'{"name":"ts","type":"timestamp without time zone","value":"2024-01-02 03:04:05"},'
    r'{"name":"dt","type":"date","value":"2024-01-02"},'
    r'{"name":"tm","type":"time without time zone","value":"03:04:05"},'
    r'{"name":"by","type":"bytea","value":"0102ff"},'
    r'{"name":"ta","type":"text[]","value":"{a,b,\"c,d\",\"with \\\"quote\\\"\",NULL,\"\"}"},'
    r'{"name":"ia","type":"integer[]","value":"{1,2,NULL}"},'
    r'{"name":"va","type":"character varying(5)[]","value":"{x,y}"},'
    r'{"name":"nia","type":"integer[]","value":"{{1,2},{3,4}}"},'
    r'{"name":"ba","type":"bytea[]","value":"{\"\\\\x01\",\"\\\\x\"}"},'
    r'{"name":"m","type":"mood","value":"happy"},'
    r'{"name":"big","type":"text","value":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"},'
    r'{"name":"nn","type":"numeric","value":null}],"pk":[{"name":"id","type":"integer"}]}'
)
# XLogData 0/150B488: the end of the commit record
COMMIT = (
    '{"action":"C","xid":727,"timestamp":"2026-11-25 14:54:02.405955-08",'
    '"lsn":"0/150B458","nextlsn":"0/150B488"}'
)
# REPLICA IDENTITY DEFAULT, unchanged TOASTed "big" left out of "columns"
UPDATE_TOAST = (
    '{"action":"U","xid":740,"timestamp":"2026-11-25 22:54:32.042082+00","lsn":"0/1517E88",'
    '"schema":"public","table":"t2","columns":[{"name":"id","type":"integer","value":1},'
    '{"name":"n","type":"numeric","value":null},'
    '{"name":"other","type":"text","value":"p"}],'
    '"identity":[{"name":"id","type":"integer","value":1}],'
    '"pk":[{"name":"id","type":"integer"}]}'
)
# REPLICA IDENTITY FULL, key changed from 1 to 2
UPDATE_FULL = (
    '{"action":"U","xid":730,"timestamp":"2026-11-25 14:54:02.40675-08","lsn":"0/150B8F8",'
    '"schema":"public","table":"t","columns":[{"name":"id","type":"integer","value":2},'
    '{"name":"body","type":"text","value":"same"}],'
    '"identity":[{"name":"id","type":"integer","value":1},'
    '{"name":"body","type":"text","value":"same"}],'
    '"pk":[{"name":"id","type":"integer"}]}'
)
# XLogData 0/150EA70
DELETE = (
    '{"action":"D","xid":734,"timestamp":"2026-11-25 14:54:02.408125-08","lsn":"0/150EA70",'
    '"schema":"public","table":"t","identity":[{"name":"id","type":"integer","value":5}],'
    '"pk":[{"name":"id","type":"integer"}]}'
)
TRUNCATE = (
    '{"action":"T","xid":736,"timestamp":"2026-11-25 14:54:02.409058-08","lsn":"0/150F6F0",'
    '"schema":"public","table":"t"}'
)
# pg_logical_emit_message(false, ...): outside any transaction
HEARTBEAT = (
    '{"action":"M","xid":null,"timestamp":null,"lsn":"0/150EB38","transactional":false,'
    '"prefix":"connector.heartbeat","content":"hello"}'
)
TX_MESSAGE = (
    '{"action":"M","xid":735,"timestamp":"2026-11-25 14:54:02.408349-08","lsn":"0/150EB70",'
    '"transactional":true,"prefix":"p","content":"in tx"}'
)
MINIMAL_INSERT = (
    '{"action":"I","schema":"public","table":"documents",'
    '"columns":[{"name":"id","type":"integer","value":1}],"pk":[{"name":"id","type":"integer"}]}'
)


def lsn(text: str) -> Lsn:
    return Lsn.parse(text)


# --------------------------------------------------------------------------- decode


def test_begin() -> None:
    record = decode(BEGIN.encode(), lsn("0/1508708"))
    assert record == Begin(
        xid=727,
        lsn=lsn("0/150B458"),
        timestamp=datetime(2026, 11, 25, 14, 54, 2, 405955, tzinfo=PST),
        commit_lsn=lsn("0/150B488"),  # "nextlsn": where the commit record ends
    )
    assert isinstance(record, Begin)
    assert record.timestamp is not None
    assert record.timestamp.utcoffset() == timedelta(hours=-8)


def test_insert_keeps_postgres_text_of_every_type() -> None:
    record = decode(INSERT.encode(), lsn("0/150B1A8"))
    assert isinstance(record, RowChange)
    assert record.op is Op.INSERT
    assert record.table == "public.t"
    assert record.lsn == lsn("0/150B1A8")
    assert record.old == {}
    texts = {name: value.text for name, value in record.new.items()}
    assert texts == {
        "id": "1",
        "i2": "2",
        "i8": "9000000000",
        "n": "12345678901234567890.123456789",
        "n2": "3.10",  # the scale survives
        "r": "1.5",
        "d": "2.25e+300",  # as float8out prints it
        "f": "1e-05",  # Decimal would print 0.00001
        "b": "true",  # what true::text gives
        "tx": 'hé "x" \\ y',
        "vc": "abc",
        "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "j": '{"a": [1, 2.5]}',
        "jb": '{"b": null}',
        "tz": "2024-01-01 19:04:05.123456-08",
        "ts": "2024-01-02 03:04:05",
        "dt": "2024-01-02",
        "tm": "03:04:05",
        "by": "\\x0102ff",  # wal2json drops the \x that bytea::text has
        "ta": '{a,b,"c,d","with \\"quote\\"",NULL,""}',
        "ia": "{1,2,NULL}",
        "va": "{x,y}",
        "nia": "{{1,2},{3,4}}",
        "ba": '{"\\\\x01","\\\\x"}',
        "m": "happy",
        "big": "x" * 30,
        "nn": None,
    }
    assert record.new["n2"] == PgValue("3.10", "numeric(10,2)")
    assert record.new["va"].type == "character varying(5)[]"


def test_insert_typed_values() -> None:
    record = decode(INSERT)
    assert isinstance(record, RowChange)
    values = {name: value.value for name, value in record.new.items()}
    assert values["id"] == 1
    assert values["i8"] == 9000000000
    assert values["n"] == Decimal("12345678901234567890.123456789")
    assert values["d"] == 2.25e300
    assert values["b"] is True
    assert values["j"] == {"a": [1, 2.5]}
    assert values["jb"] == {"b": None}
    assert values["tz"] == datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert values["ts"] == datetime(2024, 1, 2, 3, 4, 5)
    assert values["by"] == b"\x01\x02\xff"
    assert values["ta"] == ["a", "b", "c,d", 'with "quote"', None, ""]
    assert values["ia"] == [1, 2, None]
    assert values["nia"] == [[1, 2], [3, 4]]
    assert values["ba"] == [b"\x01", b""]
    assert values["nn"] is None


def test_commit_lsn_is_the_end_of_the_commit_record() -> None:
    """The XLogData position wins; without it "nextlsn" (the same position), then "lsn"."""
    stamp = datetime(2026, 11, 25, 14, 54, 2, 405955, tzinfo=PST)
    assert decode(COMMIT, lsn("0/150B488")) == Commit(
        xid=727, lsn=lsn("0/150B488"), timestamp=stamp
    )
    assert decode(COMMIT, lsn("0/AAAA")) == Commit(xid=727, lsn=lsn("0/AAAA"), timestamp=stamp)
    assert decode(COMMIT) == Commit(xid=727, lsn=lsn("0/150B488"), timestamp=stamp)
    without_next = '{"action":"C","xid":727,"lsn":"0/150B458"}'
    assert decode(without_next) == Commit(xid=727, lsn=lsn("0/150B458"))


def test_commit_without_any_lsn_is_an_error() -> None:
    with pytest.raises(ReplicationError, match="include-lsn"):
        decode('{"action":"C","xid":727}')
    assert decode('{"action":"C"}', lsn("0/10")) == Commit(xid=None, lsn=lsn("0/10"))


def test_update_without_unchanged_toast_column() -> None:
    record = decode(UPDATE_TOAST, lsn("0/1517E88"))
    assert isinstance(record, RowChange)
    assert record.op is Op.UPDATE
    assert record.table == "public.t2"
    assert "big" not in record.new  # absent, not NULL
    assert record.new == {
        "id": PgValue("1", "integer"),
        "n": PgValue(None, "numeric"),  # NULL (or NaN/Infinity: wal2json prints both as null)
        "other": PgValue("p", "text"),
    }
    assert record.old == {"id": PgValue("1", "integer")}


def test_column_without_value_is_absent() -> None:
    payload = (
        '{"action":"U","schema":"s","table":"t","columns":[{"name":"id","type":"integer",'
        '"value":1},{"name":"body","type":"text"}]}'
    )
    record = decode(payload)
    assert isinstance(record, RowChange)
    assert record.new == {"id": PgValue("1", "integer")}


def test_update_under_replica_identity_full() -> None:
    record = decode(UPDATE_FULL)
    assert isinstance(record, RowChange)
    assert record.new == {"id": PgValue("2", "integer"), "body": PgValue("same", "text")}
    assert record.old == {"id": PgValue("1", "integer"), "body": PgValue("same", "text")}


def test_columns_nobody_reads_are_dropped_at_decode_from_the_row_and_its_identity() -> None:
    record = decode(UPDATE_FULL, columns={"public.t": frozenset({"id"})})
    assert isinstance(record, RowChange)
    assert record.new == {"id": PgValue("2", "integer")}
    assert record.old == {"id": PgValue("1", "integer")}  # the old key still tells a re-key
    other = decode(UPDATE_FULL, columns={"public.other": frozenset({"id"})})
    assert isinstance(other, RowChange) and "body" in other.new  # an unlisted relation: all


def test_delete() -> None:
    record = decode(DELETE, lsn("0/150EA70"))
    assert record == RowChange(
        op=Op.DELETE,
        table="public.t",
        new={},
        old={"id": PgValue("5", "integer")},
        lsn=lsn("0/150EA70"),
    )


def test_truncate() -> None:
    record = decode(TRUNCATE)
    assert record == RowChange(op=Op.TRUNCATE, table="public.t", lsn=lsn("0/150F6F0"))


def test_messages() -> None:
    assert decode(HEARTBEAT, lsn("0/150EB38")) == Message(
        prefix="connector.heartbeat", content="hello", transactional=False, lsn=lsn("0/150EB38")
    )
    assert decode(TX_MESSAGE) == Message(
        prefix="p", content="in tx", transactional=True, lsn=lsn("0/150EB70")
    )


def test_absent_optional_fields() -> None:
    record = decode(MINIMAL_INSERT, lsn("0/42"))
    assert record == RowChange(
        op=Op.INSERT,
        table="public.documents",
        new={"id": PgValue("1", "integer")},
        lsn=lsn("0/42"),  # no "lsn" in the record: the XLogData position
    )
    assert decode(MINIMAL_INSERT) == RowChange(
        op=Op.INSERT, table="public.documents", new={"id": PgValue("1", "integer")}
    )
    assert decode('{"action":"B"}', lsn("0/7")) == Begin(xid=None, lsn=lsn("0/7"))
    assert decode('{"action":"M","prefix":"p","content":"c"}') == Message("p", "c", False)


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview, str])
def test_payload_kinds(kind: type) -> None:
    payload = kind(INSERT.encode()) if kind is not str else INSERT
    assert decode(payload) == decode(INSERT)


def test_numbers_keep_their_exact_text() -> None:
    huge = "9" * 5000  # more digits than int() accepts by default: numeric allows them
    payload = (
        '{"action":"I","schema":"public","table":"t","columns":['
        f'{{"name":"n","type":"numeric","value":{huge}}},'
        '{"name":"s","type":"numeric","value":0.0000001},'
        '{"name":"e","type":"real","value":1e+20}]}'
    )
    record = decode(payload)
    assert isinstance(record, RowChange)
    assert record.new["n"].text == huge
    assert record.new["s"].text == "0.0000001"
    assert record.new["e"].text == "1e+20"


def test_empty_bytea() -> None:
    payload = (
        '{"action":"I","schema":"public","table":"t",'
        '"columns":[{"name":"b","type":"bytea","value":""},{"name":"n","type":"bytea","value":null}]}'
    )
    record = decode(payload)
    assert isinstance(record, RowChange)
    assert record.new == {"b": PgValue("\\x", "bytea"), "n": PgValue(None, "bytea")}


def test_unparseable_timestamp_is_none() -> None:
    record = decode('{"action":"B","xid":1,"lsn":"0/1","timestamp":"someday"}')
    assert record == Begin(xid=1, lsn=lsn("0/1"), timestamp=None)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ('{"action":"I","schema":"public"', r"not JSON.*'\{\"action\":\"I\",\"schema\""),
        ("", "not JSON"),
        ("[1,2]", "not an object"),
        ('{"action":"X","xid":1}', r"unknown wal2json action 'X'.*format-version=2"),
        ('{"xid":1,"change":[]}', r"unknown wal2json action None.*format-version=2"),
        ('{"action":"I","table":"t","columns":[]}', r"malformed wal2json 'I' record.*schema"),
        ('{"action":"D","schema":"s","table":"t","identity":[{"value":1}]}', "malformed.*'D'"),
        ('{"action":"B","lsn":"nonsense"}', "malformed wal2json 'B' record.*LSN"),
        ('{"action":"C","xid":"x","lsn":"0/1"}', "malformed wal2json 'C' record"),
        ('{"action":"M","lsn":"0/1"}', "malformed wal2json 'M' record.*prefix"),
        ('{"action":["I"]}', "malformed"),
    ],
)
def test_malformed(payload: str | bytes, message: str) -> None:
    with pytest.raises(ReplicationError, match=message):
        decode(payload)


def test_decoded_in_the_database_encoding() -> None:
    """wal2json writes the database's encoding: a LATIN1 record is not UTF-8."""
    payload = (
        '{"action":"I","schema":"public","table":"t","columns":'
        '[{"name":"body","type":"text","value":"Straße über"}]}'
    ).encode("latin-1")
    change = decode(payload, Lsn(1), "iso8859-1")
    assert isinstance(change, RowChange) and change.new["body"].text == "Straße über"
    with pytest.raises(ConfigError, match=r"at 0/1 is not valid utf-8 .*sql_ascii_encoding"):
        decode(payload, Lsn(1))


def test_error_shows_only_the_beginning_of_a_long_payload() -> None:
    payload = '{"action":"Z","pad":"' + "p" * 5000 + '"}'
    with pytest.raises(ReplicationError) as caught:
        decode(payload)
    assert str(caught.value).endswith("...")
    assert len(str(caught.value)) < 400


# --------------------------------------------------------------------------- assembler


def feed_all(assembler: TransactionAssembler, payloads: list[tuple[str, str]]) -> list[Transaction]:
    done = []
    for payload, wal_lsn in payloads:
        transaction = assembler.feed(decode(payload, lsn(wal_lsn)))
        if transaction is not None:
            done.append(transaction)
    return done


def test_assembles_a_transaction_at_its_commit() -> None:
    assembler = TransactionAssembler()
    assert assembler.feed(decode(BEGIN, lsn("0/1508708"))) is None
    assert assembler.in_transaction
    assert assembler.feed(decode(INSERT, lsn("0/150B1A8"))) is None
    assert assembler.feed(decode(TX_MESSAGE, lsn("0/150B300"))) is None
    assert assembler.feed(decode(DELETE, lsn("0/150B400"))) is None
    transaction = assembler.feed(decode(COMMIT, lsn("0/150B488")))
    assert transaction is not None
    assert not assembler.in_transaction
    assert transaction.xid == 727
    assert transaction.commit_lsn == lsn("0/150B488")
    assert transaction.commit_time == datetime(2026, 11, 25, 22, 54, 2, 405955, tzinfo=UTC)
    assert [change.op for change in transaction.changes] == [Op.INSERT, Op.DELETE]
    assert [message.prefix for message in transaction.messages] == ["p"]


def test_transactions_do_not_share_state() -> None:
    assembler = TransactionAssembler()
    first, second = feed_all(
        assembler,
        [
            (BEGIN, "0/1"),
            (INSERT, "0/2"),
            (COMMIT, "0/3"),
            (BEGIN, "0/4"),
            (TRUNCATE, "0/5"),
            (COMMIT, "0/6"),
        ],
    )
    assert [c.op for c in first.changes] == [Op.INSERT]
    assert [c.op for c in second.changes] == [Op.TRUNCATE]
    assert (first.commit_lsn, second.commit_lsn) == (lsn("0/3"), lsn("0/6"))


def test_heartbeat_outside_a_transaction_is_returned_at_once() -> None:
    assembler = TransactionAssembler()
    transaction = assembler.feed(decode(HEARTBEAT, lsn("0/150EB38")))
    assert transaction == Transaction(
        xid=None,
        commit_lsn=lsn("0/150EB38"),
        commit_time=None,
        changes=[],
        messages=[Message("connector.heartbeat", "hello", False, lsn("0/150EB38"))],
    )


def test_heartbeat_without_lsn_is_dropped() -> None:
    assembler = TransactionAssembler()
    assert assembler.feed(Message("connector.heartbeat", "x", transactional=False)) is None
    assert not assembler.in_transaction


def test_non_transactional_message_inside_a_transaction_waits_for_the_commit() -> None:
    assembler = TransactionAssembler()
    (transaction,) = feed_all(assembler, [(BEGIN, "0/1"), (HEARTBEAT, "0/2"), (COMMIT, "0/3")])
    assert [m.prefix for m in transaction.messages] == ["connector.heartbeat"]


def test_commit_without_begin() -> None:
    assembler = TransactionAssembler()
    transaction = assembler.feed(decode(COMMIT, lsn("0/150B488")))
    assert transaction is not None
    assert transaction.changes == []
    assert transaction.commit_lsn == lsn("0/150B488")
    (with_changes,) = feed_all(assembler, [(MINIMAL_INSERT, "0/5"), (COMMIT, "0/6")])
    assert len(with_changes.changes) == 1


def test_commit_falls_back_to_begin_xid_and_time() -> None:
    assembler = TransactionAssembler()
    stamp = datetime(2024, 1, 2, tzinfo=UTC)
    assembler.feed(Begin(xid=9, lsn=lsn("0/1"), timestamp=stamp))
    transaction = assembler.feed(Commit(xid=None, lsn=lsn("0/2")))
    assert transaction is not None
    assert (transaction.xid, transaction.commit_time) == (9, stamp)


def test_begin_without_commit_drops_the_partial_transaction() -> None:
    assembler = TransactionAssembler()
    (transaction,) = feed_all(
        assembler,
        [(BEGIN, "0/1"), (INSERT, "0/2"), (BEGIN, "0/3"), (DELETE, "0/4"), (COMMIT, "0/5")],
    )
    assert [c.op for c in transaction.changes] == [Op.DELETE]


def test_reset_forgets_a_partial_transaction() -> None:
    assembler = TransactionAssembler()
    feed_all(assembler, [(BEGIN, "0/1"), (INSERT, "0/2")])
    assembler.reset()
    assert not assembler.in_transaction
    (transaction,) = feed_all(assembler, [(COMMIT, "0/3")])
    assert transaction.changes == []


def test_a_large_transaction_comes_in_pieces_at_its_commit_lsn() -> None:
    """With piece_rows, every piece carries the commit LSN BEGIN announced (its "nextlsn"),
    only the last one is complete, and nothing is held beyond a piece."""
    assembler = TransactionAssembler(piece_rows=2)
    records = [(BEGIN, "0/1"), *[(INSERT, f"0/{i + 2}") for i in range(5)], (COMMIT, "0/150B488")]
    pieces = feed_all(assembler, records)
    assert [len(p.changes) for p in pieces] == [2, 2, 1]
    assert [p.partial for p in pieces] == [True, True, False]
    assert [p.continued for p in pieces] == [False, True, True]  # earlier pieces handed over
    assert {p.commit_lsn for p in pieces} == {lsn("0/150B488")}
    (next_one,) = feed_all(assembler, [(BEGIN, "0/1"), (INSERT, "0/2"), (COMMIT, "0/150B488")])
    assert not next_one.continued


def test_without_a_commit_lsn_in_begin_a_transaction_stays_whole() -> None:
    assembler = TransactionAssembler(piece_rows=2)
    begin = '{"action":"B","xid":727,"lsn":"0/150B458"}'
    records = [(begin, "0/1"), *[(INSERT, f"0/{i + 2}") for i in range(5)], (COMMIT, "0/9")]
    (whole,) = feed_all(assembler, records)
    assert len(whole.changes) == 5 and not whole.partial

"""The change model (connector.core.changes): pure data, no servers."""

from __future__ import annotations

import dataclasses

import pytest

from connector.core.changes import Begin, Commit, Message, Op, RowChange, Transaction
from connector.core.lsn import Lsn
from connector.core.pgtypes import PgValue
from connector.core.wal2json import decode


def test_ops_are_wal2json_action_letters() -> None:
    assert [Op(letter) for letter in "IUDT"] == [Op.INSERT, Op.UPDATE, Op.DELETE, Op.TRUNCATE]


def test_a_change_is_a_value_and_cannot_be_changed() -> None:
    row = {"id": PgValue("1", "integer")}
    change = RowChange(Op.INSERT, "public.docs", new=row, lsn=Lsn(10))
    assert change == RowChange(Op.INSERT, "public.docs", new=dict(row), lsn=Lsn(10))
    assert change != RowChange(Op.INSERT, "public.docs", new=row, lsn=Lsn(11))
    for record in (change, Message("p", "c", False), Begin(1), Commit(1, Lsn(2))):
        with pytest.raises(dataclasses.FrozenInstanceError):
            record.lsn = Lsn(99)  # type: ignore[misc]


def test_absent_rows_are_empty_and_never_shared() -> None:
    """`new`/`old` absent means "not in the change": each change gets its own empty row."""
    first, second = RowChange(Op.TRUNCATE, "public.a"), RowChange(Op.TRUNCATE, "public.b")
    assert first.new == {} and first.old == {} and first.lsn is None
    assert first.new is not second.new and first.old is not second.old


def test_a_transaction_is_whole_unless_marked_and_owns_its_lists() -> None:
    one = Transaction(xid=7, commit_lsn=Lsn(100), commit_time=None, changes=[])
    other = Transaction(xid=8, commit_lsn=Lsn(200), commit_time=None, changes=[])
    assert not one.partial and not one.continued and one.messages == []
    one.messages.append(Message("heartbeat", "", True))
    assert other.messages == []


def test_a_decoded_change_equals_the_one_built_by_hand() -> None:
    """Values travel as PostgreSQL's text plus the type name, so a change decoded from wal2json
    and one built from a snapshot row compare equal (the applier relies on it)."""
    payload = (
        '{"action":"I","schema":"public","table":"docs","lsn":"0/10",'
        '"columns":[{"name":"id","type":"integer","value":1},'
        '{"name":"body","type":"text","value":"a:b"}]}'
    )
    expected = RowChange(
        Op.INSERT,
        "public.docs",
        new={"id": PgValue("1", "integer"), "body": PgValue("a:b", "text")},
        lsn=Lsn.parse("0/10"),
    )
    assert decode(payload) == expected

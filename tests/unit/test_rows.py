"""Folding a batch of changes into final row states (connector.core.rows): pure, no servers."""

from __future__ import annotations

from connector.config import TableSettings
from connector.core.changes import Op, RowChange, Transaction
from connector.core.lsn import Lsn
from connector.core.pgtypes import PgValue
from connector.core.rows import collect, commit_groups, split
from connector.core.tables import TableInfo

TABLE = TableInfo(
    TableSettings(name="public.docs", content=["title", "body"], metadata={"lang": "tag"}),
    key=("id",),
    replica_identity="d",
    column_types={"id": "integer", "title": "text", "body": "text", "lang": "text"},
)
TABLES = {TABLE.name: TABLE}


def row(**values: str | None) -> dict[str, PgValue]:
    return {name: PgValue(text, "text") for name, text in values.items()}


def txn(lsn: int, *changes: RowChange) -> Transaction:
    return Transaction(lsn, Lsn(lsn), None, list(changes))


def change(
    op: Op, new: dict[str, PgValue] | None = None, old: dict[str, PgValue] | None = None
) -> RowChange:
    return RowChange(op, TABLE.name, new=new or {}, old=old or {})


def test_only_the_last_state_of_a_row_counts_and_carries_its_commit_lsn() -> None:
    effects = collect(
        [
            txn(10, change(Op.INSERT, row(id="1", title="a", body="first", lang="en"))),
            txn(20, change(Op.UPDATE, row(id="1", title="a", body="second", lang="en"))),
        ],
        TABLES,
    )
    state = effects.rows[(TABLE.name, "1")]
    assert state.values["body"].text == "second"
    assert state.lsn == Lsn(20) and not state.deleted and not state.inserted
    assert effects.last_lsn == Lsn(20)


def test_an_update_that_leaves_out_a_column_takes_it_from_the_earlier_change() -> None:
    effects = collect(
        [
            txn(10, change(Op.INSERT, row(id="1", title="t", body="long body", lang="en"))),
            txn(20, change(Op.UPDATE, row(id="1", title="new title", lang="en"))),
        ],
        TABLES,
    )
    state = effects.rows[(TABLE.name, "1")]
    assert state.values["body"].text == "long body"
    assert state.missing_content == []
    assert state.text() == "new title\n\nlong body"


def test_an_update_alone_that_leaves_out_content_says_which_is_missing() -> None:
    effects = collect([txn(10, change(Op.UPDATE, row(id="1", title="t", lang="en")))], TABLES)
    assert effects.rows[(TABLE.name, "1")].missing_content == ["body"]


def test_a_key_change_deletes_the_old_key_and_a_delete_wins_over_an_insert() -> None:
    effects = collect(
        [
            txn(10, change(Op.INSERT, row(id="1", title="a", body="b", lang="en"))),
            txn(
                20,
                change(Op.UPDATE, row(id="2", title="a", body="b", lang="en"), old=row(id="1")),
            ),
            txn(30, change(Op.INSERT, row(id="3", title="c", body="d", lang="en"))),
            txn(40, change(Op.DELETE, old=row(id="3"))),
        ],
        TABLES,
    )
    assert effects.rows[(TABLE.name, "1")].deleted
    assert not effects.rows[(TABLE.name, "2")].deleted
    assert effects.rows[(TABLE.name, "3")].deleted and effects.rows[(TABLE.name, "3")].lsn == Lsn(
        40
    )


def test_a_truncate_forgets_earlier_rows_of_the_table_and_keeps_later_ones() -> None:
    effects = collect(
        [
            txn(10, change(Op.INSERT, row(id="1", title="a", body="b", lang="en"))),
            txn(20, RowChange(Op.TRUNCATE, TABLE.name)),
            txn(30, change(Op.INSERT, row(id="2", title="c", body="d", lang="en"))),
        ],
        TABLES,
    )
    assert list(effects.rows) == [(TABLE.name, "2")]
    assert effects.truncated == {TABLE.name: Lsn(20)}


def test_a_row_without_its_key_is_skipped_with_the_reason_and_others_go_on() -> None:
    effects = collect(
        [
            txn(
                10,
                change(Op.INSERT, row(id=None, title="a", body="b", lang="en")),
                change(Op.INSERT, row(id="2", title="c", body="d", lang="en")),
            )
        ],
        TABLES,
    )
    assert list(effects.rows) == [(TABLE.name, "2")]
    [(skipped, reason)] = effects.skipped
    assert skipped.new["id"].text is None and "key column id is missing or NULL" in reason


def test_a_bad_row_of_a_partition_is_skipped_under_its_table_naming_the_partition() -> None:
    """Its dead letter goes to its table's stream (a leaf's name has none: it would be lost)."""
    leaf = RowChange(Op.INSERT, "public.docs_2024", new=row(id=None, title="a", body="b"))
    effects = collect([txn(10, leaf)], {TABLE.name: TABLE, "public.docs_2024": TABLE})
    [(skipped, reason)] = effects.skipped
    assert skipped.table == TABLE.name and "(in partition public.docs_2024)" in reason


def test_changes_of_tables_that_are_not_configured_are_ignored() -> None:
    other = RowChange(Op.INSERT, "public.other", new=row(id="1"))
    effects = collect([txn(10, other)], TABLES)
    assert effects.rows == {} and effects.skipped == [] and effects.last_lsn == Lsn(10)


def test_keys_with_separators_are_encoded_unambiguously() -> None:
    effects = collect(
        [txn(10, change(Op.INSERT, row(id="a:b,c d", title="t", body="b", lang="en")))], TABLES
    )
    assert list(effects.rows) == [(TABLE.name, "a%3Ab%2Cc%20d")]


def test_a_batch_splits_into_slices_that_keep_every_row_once_and_its_last_lsn() -> None:
    inserts = [change(Op.INSERT, row(id=str(n), title="t", body="b", lang="en")) for n in range(5)]
    effects = collect(
        [
            txn(10, change(Op.TRUNCATE), *inserts),
            txn(20, change(Op.INSERT, row(id=None, title="no key", body="b", lang="en"))),
        ],
        TABLES,
    )
    slices = split(effects, 2)
    assert [len(s.rows) for s in slices] == [2, 2, 1]
    assert [k for s in slices for k in s.rows] == list(effects.rows)
    assert all(s.last_lsn == Lsn(20) for s in slices)
    assert slices[0].truncated == {TABLE.name: Lsn(10)} and len(slices[0].skipped) == 1
    assert not any(s.truncated or s.skipped for s in slices[1:])
    assert len(split(collect([txn(30, change(Op.TRUNCATE))], TABLES), 2)) == 1


def test_a_batch_is_cut_into_groups_of_whole_transactions_each_flipped_on_its_own() -> None:
    def of(lsn: int, rows: int, partial: bool = False) -> Transaction:
        inserts = [change(Op.INSERT, row(id=str(n), title="t", body="b")) for n in range(rows)]
        return Transaction(lsn, Lsn(lsn), None, inserts, partial=partial)

    def lsns(groups: list[list[Transaction]]) -> list[list[int]]:
        return [[t.commit_lsn.value for t in group] for group in groups]

    # A group ends with the transaction that brings it to 3 changes or more.
    batch = [of(1, 1), of(2, 1), of(3, 2), of(4, 5), of(5, 1)]
    assert lsns(commit_groups(batch, 3)) == [[1, 2, 3], [4], [5]]
    # Transactions without changes at the end join the group before them (no flip of their own).
    assert lsns(commit_groups([of(1, 3), of(2, 0), of(3, 0)], 3)) == [[1, 2, 3]]
    assert lsns(commit_groups([of(1, 0)], 3)) == [[1]]
    # A piece of a large transaction never ends a group: only its transaction's end is flipped.
    assert lsns(commit_groups([of(7, 5, partial=True)], 3)) == [[7]]
    assert lsns(commit_groups([of(6, 1), of(7, 5, partial=True)], 3)) == [[6, 7]]
    assert lsns(commit_groups([], 3)) == []


def test_a_truncate_after_changes_of_its_transaction_that_may_be_staged_is_marked() -> None:
    """A TRUNCATE in a later piece (or after changes of its table in the same piece) leaves
    the rows staged at its LSN to be deleted; a later truncate without them unmarks it."""
    insert = change(Op.INSERT, row(id="1", title="t", body="b", lang="en"))
    first = txn(10, change(Op.TRUNCATE))
    later = Transaction(10, Lsn(10), None, [change(Op.TRUNCATE)], continued=True)
    assert not collect([first], TABLES).truncated_staged
    assert collect([later], TABLES).truncated_staged == {TABLE.name}
    assert collect([txn(10, insert, change(Op.TRUNCATE))], TABLES).truncated_staged == {TABLE.name}
    assert not collect([later, txn(20, change(Op.TRUNCATE))], TABLES).truncated_staged
    other = change(Op.INSERT, row(id="2", title="t", body="b", lang="en"))
    effects = collect([later, txn(20, insert, other)], TABLES)
    assert split(effects, 1)[0].truncated_staged == {TABLE.name}
    assert not split(effects, 1)[-1].truncated_staged

"""From the changes of a batch of transactions to the final state of each touched row (pure).

A batch is cut into groups of whole transactions (`commit_groups`), each made visible at once
(one flip of the visible LSN), so only each row's last state in the group matters. Columns an
UPDATE leaves out (unchanged TOASTed values) are filled from the row's earlier change in the
group or from the old row wal2json sends under REPLICA IDENTITY FULL; when neither has them
they stay absent, and `RowState.missing_content` says which.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from connector.core.changes import Op, RowChange, Transaction
from connector.core.chunking import Chunker
from connector.core.keys import encode_key
from connector.core.lsn import ZERO, Lsn
from connector.core.pgtypes import PgValue, metadata_field
from connector.core.tables import TableInfo
from connector.errors import RowError


@dataclass(slots=True)
class RowState:
    """What one row looks like at the end of the batch."""

    table: TableInfo
    key: str  # encoded (keys.encode_key)
    lsn: Lsn  # commit LSN of the last transaction that touched it
    deleted: bool
    values: dict[str, PgValue] = field(default_factory=dict)
    inserted: bool = False  # the last change was an INSERT (all columns were sent)
    leaf: str = ""  # the partition it is in, for a partitioned table (its manifest records it)

    @property
    def missing_content(self) -> list[str]:
        return [c for c in self.table.settings.content if c not in self.values]

    @property
    def missing_metadata(self) -> list[str]:
        return [c for c in self.table.settings.metadata if c not in self.values]

    def metadata_fields(self) -> dict[str, str | float]:
        """The row's metadata as the hash fields its chunks carry (NULL ones left out)."""
        fields: dict[str, str | float] = {}
        for column, kind in self.table.settings.metadata.items():
            value = self.values.get(column)
            converted = metadata_field(value, kind) if value is not None else None
            if converted is not None:
                fields[column] = converted
        return fields

    def text(self, max_chars: int | None = None) -> str:
        """The content columns' text joined by blank lines; NULL columns are left out. With
        `max_chars`, at most about that many characters of it (a huge value is not copied
        whole; `limited_text` says whether it was cut)."""
        parts = (self.values[c].text for c in self.table.settings.content)
        kept = [p for p in parts if p and not p.isspace()]
        if max_chars is not None:
            kept = [p[:max_chars] for p in kept]
        return "\n\n".join(kept)

    def limited_text(self, chunker: Chunker) -> tuple[str, bool]:
        """The row's text cut at the chunker's `max_tokens`, and whether it was cut."""
        limit = chunker.max_chars
        text, cut = chunker.limit(self.text(limit))
        if limit is not None and not cut:
            cut = any(len(v.text or "") > limit for v in self._content_values())
        return text, cut

    def _content_values(self) -> list[PgValue]:
        return [self.values[c] for c in self.table.settings.content]


@dataclass(slots=True)
class BatchEffects:
    """Everything a batch does: final row states, truncated tables, the last commit LSN."""

    rows: dict[tuple[str, str], RowState] = field(default_factory=dict)
    truncated: dict[str, Lsn] = field(default_factory=dict)
    last_lsn: Lsn = ZERO
    skipped: list[tuple[RowChange, str]] = field(default_factory=list)
    # Partitions truncated alone, by (table, leaf). The rows Redis holds in that leaf are
    # deleted at that LSN (the planner finds them by the leaf their manifests record).
    truncated_leaves: dict[tuple[str, str], LeafTruncate] = field(default_factory=dict)
    # Tables in `truncated` whose TRUNCATE follows changes of its own transaction that may be
    # staged already (by an earlier piece, or an attempt before a restart with other pieces):
    # the floor at the transaction's LSN does not hide versions at that same LSN, so the rows
    # staged at it are deleted at it (sink.writer).
    truncated_staged: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class LeafTruncate:
    """A TRUNCATE of one partition of a partitioned table."""

    table: TableInfo
    leaf: str
    lsn: Lsn


def commit_groups(txns: Sequence[Transaction], rows: int) -> list[list[Transaction]]:
    """`txns` (in commit order) cut into groups of whole transactions, each flipped on its own:
    a group ends with the transaction that brings it to `rows` changes or more, so a commit
    becomes visible after about `rows` changes, not after the whole batch. A piece of a large
    transaction never ends a group (its transaction's end is flipped, not the piece), and
    transactions without changes at the end join the group before them (a flip each costs
    a round trip)."""
    groups: list[list[Transaction]] = []
    group: list[Transaction] = []
    changes = 0
    for txn in txns:
        group.append(txn)
        changes += len(txn.changes)
        if changes >= rows and not txn.partial:
            groups.append(group)
            group, changes = [], 0
    if group and groups and changes == 0 and not any(t.partial for t in group):
        groups[-1].extend(group)
    elif group:
        groups.append(group)
    return groups


def split(effects: BatchEffects, rows: int) -> list[BatchEffects]:
    """`effects` in slices of at most `rows` rows, to be planned and staged one after another
    (the first slice carries the truncates and the skipped changes). Every slice keeps the
    batch's last LSN: they become visible together."""
    states = list(effects.rows.items())
    slices = [
        BatchEffects(dict(states[i : i + rows]), last_lsn=effects.last_lsn)
        for i in range(0, len(states), rows)
    ] or [BatchEffects(last_lsn=effects.last_lsn)]
    slices[0].truncated = dict(effects.truncated)
    slices[0].skipped = list(effects.skipped)
    slices[0].truncated_leaves = dict(effects.truncated_leaves)
    slices[0].truncated_staged = set(effects.truncated_staged)
    return slices


def row_key(table: TableInfo, row: Mapping[str, PgValue]) -> str:
    """The encoded key of a row, from its key columns (which must all be present and not NULL)."""
    values = []
    for column in table.key:
        value = row.get(column)
        if value is None or value.text is None:
            raise RowError(f"table {table.name}: key column {column} is missing or NULL")
        values.append(value.text)
    return encode_key(tuple(values))


def collect(
    transactions: Iterable[Transaction],
    tables: Mapping[str, TableInfo],
    effects: BatchEffects | None = None,
) -> BatchEffects:
    """Fold the batch's transactions, in commit order, into per-row final states."""
    effects = effects or BatchEffects()
    for txn in transactions:
        touched: set[str] = set()  # tables this transaction changed before, in this piece
        for change in txn.changes:
            table = tables.get(change.table)
            if table is None:
                continue  # not configured: wal2json's add-tables keeps these out anyway
            try:
                _apply_change(effects, table, change, txn.commit_lsn)
            except RowError as exc:  # a leaf's change is dead-lettered under its table
                where = f" (in partition {change.table})" if change.table != table.name else ""
                effects.skipped.append((replace(change, table=table.name), f"{exc}{where}"))
            if change.op is Op.TRUNCATE:
                staged = txn.continued or table.name in touched
                _truncated_after(effects, table.name, txn.commit_lsn, staged)
            touched.add(table.name)
        effects.last_lsn = max(effects.last_lsn, txn.commit_lsn)
    return effects


def _truncated_after(effects: BatchEffects, table: str, lsn: Lsn, staged: bool) -> None:
    """Mark a table truncated at `lsn` after changes of the same transaction that may be staged
    already (`staged`); a later TRUNCATE without them makes the mark needless (its floor is
    above every version of the earlier transaction)."""
    if effects.truncated.get(table) != lsn:
        return  # one partition truncated alone: its rows are found by the leaf they are in
    if staged:
        effects.truncated_staged.add(table)
    else:
        effects.truncated_staged.discard(table)


def _truncate_leaf(effects: BatchEffects, table: TableInfo, leaf: str, lsn: Lsn) -> None:
    """One partition truncated: its rows in this batch are deleted, and so are those Redis
    holds in it (`truncated_leaves`). Every leaf truncated (TRUNCATE of the parent) is a
    truncate of the table: one floor instead of finding rows."""
    for ident, state in effects.rows.items():
        if ident[0] == table.name and state.leaf == leaf and not state.deleted:
            effects.rows[ident] = RowState(table, state.key, lsn, deleted=True, leaf=leaf)
    effects.truncated_leaves[(table.name, leaf)] = LeafTruncate(table, leaf, lsn)
    done = {lf for (name, lf), t in effects.truncated_leaves.items()
            if name == table.name and t.lsn == lsn}  # fmt: skip
    if table.leaves and table.leaves <= done:
        for name_leaf in [k for k in effects.truncated_leaves if k[0] == table.name]:
            del effects.truncated_leaves[name_leaf]
        effects.rows = {k: v for k, v in effects.rows.items() if k[0] != table.name}
        effects.truncated[table.name] = lsn


def _apply_change(effects: BatchEffects, table: TableInfo, change: RowChange, lsn: Lsn) -> None:
    leaf = change.table if change.table != table.name else ""
    if change.op is Op.TRUNCATE and leaf:
        _truncate_leaf(effects, table, leaf, lsn)
        return
    if change.op is Op.TRUNCATE:
        effects.rows = {k: v for k, v in effects.rows.items() if k[0] != table.name}
        effects.truncated[table.name] = lsn
        return
    if change.op is Op.DELETE:
        key = row_key(table, change.old)
        effects.rows[(table.name, key)] = RowState(table, key, lsn, deleted=True, leaf=leaf)
        return
    key = row_key(table, change.new)
    if change.op is Op.UPDATE and change.old:
        old_key = row_key(table, change.old)
        if old_key != key:  # the key itself changed: the old row is gone
            effects.rows[(table.name, old_key)] = RowState(table, old_key, lsn, deleted=True)
    previous = effects.rows.get((table.name, key))
    values = dict(change.new)
    if change.op is Op.UPDATE:
        _fill_unchanged(values, table, change.old, previous)
    effects.rows[(table.name, key)] = RowState(
        table, key, lsn, deleted=False, values=values, inserted=change.op is Op.INSERT, leaf=leaf
    )


def _fill_unchanged(
    values: dict[str, PgValue],
    table: TableInfo,
    old: Mapping[str, PgValue],
    previous: RowState | None,
) -> None:
    """Columns left out of an UPDATE kept their value: take it from where it is known exactly."""
    for column in table.columns:
        if column in values:
            continue
        if previous is not None and not previous.deleted and column in previous.values:
            values[column] = previous.values[column]
        elif column in old:
            values[column] = old[column]

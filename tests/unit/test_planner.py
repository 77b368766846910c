"""The planner's decisions (connector.flow.planner): what a change builds on, stale changes,
chunk-id and vector reuse, truncate floors, metadata-only updates, a partition's truncate.
Pure: the index is an in-memory implementation of core.plan.IndexReads, the embedder the
hashing one; no servers."""

from __future__ import annotations

from collections.abc import Sequence

from connector.config import TableSettings
from connector.core.fulltext import content_fields
from connector.core.lsn import Lsn
from connector.core.pgtypes import PgValue
from connector.core.plan import BatchWrite
from connector.core.rows import BatchEffects, LeafTruncate, RowState
from connector.core.tables import TableInfo
from connector.core.versions import Manifest, Version, id_lsn
from connector.embed.hashing import HashingEmbedder
from connector.flow.planner import Planner

TABLE = TableInfo(
    TableSettings(
        name="public.docs", content=["body"], metadata={"lang": "tag"},
        chunk_tokens=16, chunk_overlap=0,
    ),
    key=("id",),
    replica_identity="d",
    column_types={"id": "integer", "body": "text", "lang": "text"},
)  # fmt: skip
NAME = TABLE.name
FIRST = "The first paragraph talks about cats and dogs."
SECOND = "The second paragraph talks about birds and fish."
THIRD = "A third one about trees."
NEW_THIRD = "A new third paragraph, about the trees in the park."


class MemoryIndex:
    """An index in memory: what the planner reads (core.plan.IndexReads), and a staging of
    planned batches into it (as sink.writer stages them in Redis)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Manifest] = {}
        self.leaves: dict[tuple[str, str], str] = {}
        self.table_floors: dict[str, list[Lsn]] = {}
        self.chunks: dict[tuple[str, str, str], dict[str, bytes]] = {}

    def manifests(self, rows: Sequence[tuple[str, str]]) -> list[Manifest]:
        return [self.rows.get(row, Manifest()) for row in rows]

    def manifests_and_floors(
        self, rows: Sequence[tuple[str, str]]
    ) -> tuple[list[Manifest], dict[str, list[Lsn]]]:
        floors = {t: list(self.table_floors.get(t, [])) for t, _key in rows}
        return self.manifests(rows), floors

    def chunk_fields(
        self, chunks: Sequence[tuple[str, str, str]], *fields: str
    ) -> list[list[bytes | None]]:
        return [[self.chunks.get(chunk, {}).get(f) for f in fields] for chunk in chunks]

    def rows_in_leaf(self, table: str, leaf: str) -> list[str]:
        return [k for (t, k), in_leaf in self.leaves.items() if t == table and in_leaf == leaf]

    def stage(self, batch: BatchWrite) -> None:
        for row in batch.rows:
            ident = (row.state.table.name, row.state.key)
            versions = {v.lsn: v for v in self.rows.get(ident, Manifest()).versions}
            versions[row.version.lsn] = row.version
            self.rows[ident] = Manifest(tuple(sorted(versions.values(), key=lambda v: v.lsn)[::-1]))
            if row.state.leaf:
                self.leaves[ident] = row.state.leaf
            for chunk in row.chunks:
                fields = {**content_fields(chunk.text), **row.metadata}
                stored = {k: str(v).encode() for k, v in fields.items()}
                self.chunks[(*ident, chunk.id)] = {**stored, "embedding": chunk.vector or b""}
        for table, lsn in batch.truncated.items():
            self.table_floors.setdefault(table, []).append(lsn)


def state(key: str, lsn: int, inserted: bool = False, **values: str) -> RowState:
    found = {"id": key, **values}
    columns = {name: PgValue(text, "text") for name, text in found.items()}
    return RowState(TABLE, key, Lsn(lsn), deleted=False, values=columns, inserted=inserted)


def effects(*states: RowState, truncated: dict[str, Lsn] | None = None) -> BatchEffects:
    rows = {(s.table.name, s.key): s for s in states}
    last = max((s.lsn for s in states), default=Lsn(0))
    return BatchEffects(rows, truncated=dict(truncated or {}), last_lsn=last)


def planner(index: MemoryIndex, embedder: HashingEmbedder | None = None) -> Planner:
    return Planner(index, [TABLE.settings], embedder or HashingEmbedder(8))


def inserted(index: MemoryIndex, lsn: int, body: str, lang: str = "en") -> Version:
    """Row 1 inserted at `lsn` and staged; its version."""
    batch = planner(index).plan(effects(state("1", lsn, True, body=body, lang=lang)), Lsn(0))
    index.stage(batch)
    return batch.rows[0].version


def test_an_update_keeps_unchanged_chunks_ids_and_embeds_only_new_text() -> None:
    index = MemoryIndex()
    before = inserted(index, 10, f"{FIRST}\n\n{SECOND}\n\n{THIRD}")
    embedder = HashingEmbedder(8)
    changed = f"{FIRST}\n\n{SECOND}\n\n{NEW_THIRD}"
    batch = planner(index, embedder).plan(effects(state("1", 20, body=changed, lang="en")), Lsn(10))
    (row,) = batch.rows
    assert row.version.lsn == Lsn(20) and row.replaces == []
    assert row.version.chunks[:2] == before.chunks[:2]  # ids of the version they came from
    assert id_lsn(row.version.chunks[2]) == Lsn(20)
    assert [c.text for c in row.chunks] == [NEW_THIRD]  # the only one written
    assert embedder.stats.texts == 1 and row.chunks[0].vector
    assert row.known == list(index.rows[(NAME, "1")].versions)


def test_a_text_an_older_version_had_takes_its_stored_vector_not_the_providers() -> None:
    index = MemoryIndex()
    first = inserted(index, 10, FIRST)
    index.stage(planner(index).plan(effects(state("1", 20, body=SECOND, lang="en")), Lsn(10)))
    embedder = HashingEmbedder(8)
    batch = planner(index, embedder).plan(effects(state("1", 30, body=FIRST, lang="en")), Lsn(20))
    (row,) = batch.rows  # a new id (its base is the version at 20), the vector of the one at 10
    assert id_lsn(row.chunks[0].id) == Lsn(30)
    assert row.chunks[0].vector == index.chunks[(NAME, "1", first.chunks[0])]["embedding"]
    assert embedder.stats.texts == 0 and batch.stats.chunks_embedded == 0


def test_an_update_that_changes_nothing_the_index_holds_writes_nothing() -> None:
    index = MemoryIndex()
    inserted(index, 10, FIRST)
    batch = planner(index).plan(effects(state("1", 20, body=FIRST, lang="en")), Lsn(10))
    assert batch.rows == [] and batch.stats.skipped_stale == 0


def test_a_change_a_visible_version_already_covers_is_skipped_as_stale() -> None:
    index = MemoryIndex()
    inserted(index, 20, FIRST)
    plan = planner(index)
    for lsn in (15, 20):  # a replay re-sends changes the visible version holds
        batch = plan.plan(effects(state("1", lsn, body=SECOND, lang="en")), Lsn(20))
        assert batch.rows == [] and batch.stats.skipped_stale == 1


def test_a_pending_version_at_or_after_the_change_is_replaced() -> None:
    index = MemoryIndex()
    inserted(index, 10, FIRST)
    pending = inserted(index, 30, SECOND)  # staged before a crash, never flipped
    batch = planner(index).plan(effects(state("1", 30, body=SECOND, lang="en")), Lsn(10))
    (row,) = batch.rows  # written again although its chunks are the same
    assert row.replaces == [pending] and row.version.chunks == pending.chunks


def test_a_truncate_floor_skips_older_changes_and_is_no_base_to_keep_chunks_from() -> None:
    index = MemoryIndex()
    before = inserted(index, 10, FIRST)
    index.table_floors[NAME] = [Lsn(20)]
    plan = planner(index)
    stale = plan.plan(effects(state("1", 15, body=FIRST, lang="en")), Lsn(20))
    assert stale.rows == [] and stale.stats.skipped_stale == 1
    batch = plan.plan(effects(state("1", 25, body=FIRST, lang="en")), Lsn(20))
    (row,) = batch.rows  # the same text, but the version below the floor may be collected
    assert row.version.chunks != before.chunks and id_lsn(row.version.chunks[0]) == Lsn(25)
    assert [c.text for c in row.chunks] == [FIRST]


def test_the_batchs_own_truncate_counts_as_a_floor_before_it_is_staged() -> None:
    index = MemoryIndex()
    inserted(index, 10, FIRST)
    batch = planner(index).plan(
        effects(state("1", 15, body=SECOND, lang="en"), truncated={NAME: Lsn(20)}), Lsn(10)
    )
    assert batch.rows == [] and batch.stats.skipped_stale == 1
    assert batch.truncated == {NAME: Lsn(20)}


def test_an_update_without_its_content_rewrites_metadata_with_the_stored_text_and_vectors() -> None:
    index = MemoryIndex()
    before = inserted(index, 10, f"{FIRST}\n\n{SECOND}")
    embedder = HashingEmbedder(8)
    plan = planner(index, embedder)
    batch = plan.plan(effects(state("1", 20, lang="fr")), Lsn(10))  # body left out: TOAST
    (row,) = batch.rows
    assert [c.text for c in row.chunks] == [FIRST, SECOND] and row.metadata == {"lang": "fr"}
    assert [id_lsn(c) for c in row.version.chunks] == [Lsn(20), Lsn(20)]  # new metadata
    stored = [index.chunks[(NAME, "1", c)]["embedding"] for c in before.chunks]
    assert [c.vector for c in row.chunks] == stored and embedder.stats.texts == 0
    same = plan.plan(effects(state("1", 20, lang="en")), Lsn(10))  # metadata unchanged too
    assert same.rows == [] and same.letters == []


def test_an_update_without_content_and_no_text_in_the_index_is_a_dead_letter() -> None:
    batch = planner(MemoryIndex()).plan(effects(state("1", 20, lang="fr")), Lsn(10))
    assert batch.rows == [] and "REPLICA IDENTITY FULL" in batch.letters[0][1]


def test_a_partition_truncated_alone_deletes_the_rows_the_index_holds_in_it() -> None:
    index = MemoryIndex()
    for key, leaf in (
        ("1", "public.docs_2024"),
        ("2", "public.docs_2025"),
        ("3", "public.docs_2024"),
    ):
        index.rows[(NAME, key)] = Manifest((Version(Lsn(10), ("x@10",)),))
        index.leaves[(NAME, key)] = leaf
    found = effects(state("3", 40, True, body=FIRST, lang="en"))  # written after the truncate
    found.truncated_leaves[(NAME, "public.docs_2024")] = LeafTruncate(
        TABLE, "public.docs_2024", Lsn(30)
    )
    batch = planner(index).plan(found, Lsn(20))
    deleted = [(r.state.key, r.version, r.state.leaf) for r in batch.rows if r.state.deleted]
    assert deleted == [("1", Version(Lsn(30), deleted=True), "public.docs_2024")]
    assert [r.state.key for r in batch.rows if not r.state.deleted] == ["3"]


def test_rows_of_tables_the_planner_does_not_plan_for_are_left_out() -> None:
    other = TableInfo(TableSettings(name="public.other", content=["body"]), ("id",), "d", {})
    row = RowState(other, "1", Lsn(10), deleted=False, values={"body": PgValue("x", "text")})
    batch = planner(MemoryIndex()).plan(effects(row), Lsn(0))
    assert batch.rows == [] and batch.stats.skipped_stale == 0

"""The read-side visibility rule (connector.query.visibility): which chunks a search counts,
and how many candidates it asks for. Pure, no servers (visibility_filter's read of the
checkpoint is tested against Redis in tests/test_sync.py)."""

from __future__ import annotations

import pytest

from connector.core.lsn import Lsn
from connector.core.versions import Manifest
from connector.query.hits import similarity
from connector.query.visibility import (
    MAX_FETCH,
    ViewTooOld,
    current_hits,
    overfetched,
    rows_of,
    visibility_clause,
    widened,
)
from connector.sink.schema import IndexSpec
from connector.sink.view import View

SPEC = IndexSpec("docs", {}, ("public.docs",))
ROW = ("public.docs", "1")


def doc(chunk_id: str, pk: str = "1") -> tuple[str, dict[str, str]]:
    fields = {"table": "public.docs", "pk": pk, "content": chunk_id, "__score": "0.5"}
    return f"docs:chunk:public.docs:{pk}:{chunk_id}", fields


def manifest(**versions: str) -> Manifest:
    return Manifest.parse({lsn.removeprefix("v"): ids for lsn, ids in versions.items()})


def kept(found: list[tuple[str, dict[str, str]]], view: View, row: Manifest) -> list[str]:
    hits = current_hits(SPEC, found, view, {ROW: row, ("public.docs", "2"): row}, similarity)
    return [f"{h.content}#{h.chunk}" for h in hits]


def test_the_clause_an_external_reader_adds() -> None:
    assert visibility_clause(Lsn(0x16B3748)) == "@lsn:[-inf 23803720]"


def test_chunks_of_the_version_current_at_the_view_are_kept_with_their_position() -> None:
    row = manifest(v100="a@100,b@100,c@100")
    assert kept([doc("c@100"), doc("a@100")], View(Lsn(150), {}), row) == ["c@100#2", "a@100#0"]


def test_superseded_and_staged_versions_are_dropped() -> None:
    row = manifest(v100="a@100", v200="b@200", v300="c@300")
    found = [doc("a@100"), doc("b@200"), doc("c@300")]
    assert kept(found, View(Lsn(250), {}), row) == ["b@200#0"]
    assert kept(found, View(Lsn(300), {}), row) == ["c@300#0"]


def test_a_row_deleted_or_truncated_at_the_view_has_no_hits() -> None:
    assert kept([doc("a@100")], View(Lsn(250), {}), manifest(v100="a@100", v200="-")) == []
    truncated = View(Lsn(250), {"public.docs": Lsn(150)})
    assert kept([doc("a@100")], truncated, manifest(v100="a@100")) == []


def test_a_view_whose_versions_were_collected_is_read_again() -> None:
    # The row kept only its version 300: the one current at 250 was collected since.
    with pytest.raises(ViewTooOld):
        kept([doc("a@100")], View(Lsn(250), {}), manifest(v300="c@300"))
    # A chunk newer than the view is only staged: no reason to read again.
    assert kept([doc("c@300")], View(Lsn(250), {}), manifest(v300="c@300")) == []


def test_each_row_is_read_once() -> None:
    found = [doc("a@1", "1"), doc("b@1", "2"), doc("c@1", "1")]
    assert rows_of(found) == [ROW, ("public.docs", "2")]


def test_a_search_asks_for_a_few_more_candidates_than_it_needs() -> None:
    assert [overfetched(n) for n in (1, 10, 20, 100)] == [4, 13, 25, 125]


def test_asking_again_widens_by_the_share_that_was_current() -> None:
    assert widened(13, 10, 5) == 39  # 5 of 13 were current: 1.5 x 10 / (5/13)
    assert widened(13, 10, 0) == 195  # none were: as if one
    assert widened(100, 10, 90) == 200  # at least twice as many
    assert widened(600, 500, 1) == MAX_FETCH

"""Row versions and garbage (connector.core.versions): pure, no servers."""

from __future__ import annotations

from connector.core.lsn import Lsn
from connector.core.versions import (
    Manifest,
    Version,
    assign_ids,
    chunk_id,
    floor_at,
    id_lsn,
    id_text_hash,
    parse_floors,
)


def manifest(**versions: str) -> Manifest:
    return Manifest.parse({name.removeprefix("v"): value for name, value in versions.items()})


def test_chunk_ids_carry_their_text_hash_and_lsn() -> None:
    assert chunk_id("ab12", Lsn(300)) == "ab12@300"
    assert chunk_id("ab12", Lsn(300), repeat=2) == "ab12+2@300"
    assert id_text_hash("ab12+2@300") == "ab12" and id_lsn("ab12+2@300") == Lsn(300)


def test_parse_orders_versions_newest_first_and_reads_deletes() -> None:
    found = Manifest.parse({b"100": b"a@100,b@100", b"300": b"-", b"200": b""})
    assert [v.lsn.value for v in found.versions] == [300, 200, 100]
    assert found.versions[0].deleted and found.versions[1].chunks == ()
    assert found.versions[2].chunks == ("a@100", "b@100")


def test_a_reader_sees_the_newest_version_at_or_below_its_visible_lsn() -> None:
    found = manifest(v100="a@100", v200="a@100,b@200", v300="c@300")
    assert found.current(Lsn(99)) is None
    assert found.current(Lsn(100)) == Version(Lsn(100), ("a@100",))
    assert found.current(Lsn(250)) == Version(Lsn(200), ("a@100", "b@200"))
    assert found.pending(Lsn(250)) == [Version(Lsn(300), ("c@300",))]


def test_deleted_and_truncated_rows_have_no_current_version() -> None:
    found = manifest(v100="a@100", v200="-")
    assert found.current(Lsn(150)) is not None and found.current(Lsn(200)) is None
    assert manifest(v100="a@100").current(Lsn(500), floor=Lsn(150)) is None
    # the truncating transaction's own rows are at the floor: they stay
    assert manifest(v150="a@150").current(Lsn(500), floor=Lsn(150)) is not None


def test_floors_a_reader_honours_are_the_newest_at_or_below_it() -> None:
    floors = parse_floors({b"100": b"", b"300": b""})
    assert floor_at(floors, Lsn(99)) is None
    assert floor_at(floors, Lsn(299)) == Lsn(100)
    assert floor_at(floors, Lsn(300)) == Lsn(300)


def test_unchanged_texts_keep_their_ids_and_repeats_get_their_own() -> None:
    base = Version(Lsn(100), ("h1@100", "h2@100", "h2+1@100"))
    assert assign_ids(["h1", "h3", "h2"], Lsn(200), base) == ("h1@100", "h3@200", "h2@100")
    assert assign_ids(["h2", "h2", "h2"], Lsn(200), base) == ("h2@100", "h2+1@100", "h2+2@200")
    assert assign_ids(["h1"], Lsn(200), Version(Lsn(150), deleted=True)) == ("h1@200",)
    assert assign_ids(["h1"], Lsn(200), None) == ("h1@200",)


def test_garbage_is_what_no_reader_at_or_past_settled_can_need() -> None:
    found = manifest(v100="a@100,b@100", v200="a@100,c@200", v300="d@300")
    assert not found.collect(Lsn(150))  # the oldest version is current at 150: nothing to do
    garbage = found.collect(Lsn(250))
    assert [v.lsn.value for v in garbage.versions] == [100]
    assert garbage.chunks == ("b@100",)  # a@100 is still listed by version 200
    assert not garbage.row_gone and not garbage.tomb


def test_a_delete_left_alone_is_a_tombstone_and_a_followed_one_goes() -> None:
    deleted = manifest(v100="a@100", v200="-")
    garbage = deleted.collect(Lsn(200))
    assert [v.lsn.value for v in garbage.versions] == [100]
    assert garbage.chunks == ("a@100",) and garbage.tomb and not garbage.row_gone
    reinserted = manifest(v100="a@100", v200="-", v300="a@300")
    garbage = reinserted.collect(Lsn(300))
    assert [v.lsn.value for v in garbage.versions] == [200, 100]
    assert garbage.chunks == ("a@100",)


def test_a_row_below_its_floor_goes_entirely_unless_rewritten_after_it() -> None:
    garbage = manifest(v100="a@100").collect(Lsn(500), floor=Lsn(200))
    assert garbage.row_gone and garbage.chunks == ("a@100",)
    rewritten = manifest(v100="a@100", v250="a@100,b@250").collect(Lsn(500), floor=Lsn(200))
    assert [v.lsn.value for v in rewritten.versions] == [100]
    assert rewritten.chunks == () and not rewritten.row_gone

"""The Redis key layout (connector.core.keys): pure, no servers."""

from __future__ import annotations

from fnmatch import fnmatchcase

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.core.keys import (
    Keyspace,
    alias_key,
    checkpoint_key,
    deadletter_key,
    decode_key,
    encode_key,
)
from connector.core.lsn import Lsn
from connector.core.versions import chunk_id

# Key columns as PostgreSQL's text output gives them: any text, the separators included.
key_values = st.lists(st.text(), min_size=1, max_size=4).map(tuple)


@pytest.mark.parametrize(
    ("values", "encoded"),
    [
        (("42",), "42"),
        (("a:b", "c d"), "a%3Ab,c%20d"),
        (("1,2", "3"), "1%2C2,3"),
        (("100%",), "100%25"),
        (("é", "日本"), "%C3%A9,%E6%97%A5%E6%9C%AC"),
        (("", "x"), ",x"),
    ],
)
def test_a_key_is_encoded_one_way_and_decodes_back(values: tuple[str, ...], encoded: str) -> None:
    assert encode_key(values) == encoded
    assert decode_key(encoded) == values


@given(key_values)
def test_any_key_round_trips_and_holds_no_colon(values: tuple[str, ...]) -> None:
    encoded = encode_key(values)
    assert decode_key(encoded) == values
    # The key layout splits keys on `:` and columns on `,`: neither may come from a value.
    assert ":" not in encoded
    assert encoded.count(",") == len(values) - 1


@given(st.tuples(key_values, key_values).filter(lambda pair: pair[0] != pair[1]))
def test_two_keys_never_share_an_encoding(pair: tuple[tuple[str, ...], ...]) -> None:
    assert encode_key(pair[0]) != encode_key(pair[1])


def test_the_keys_of_an_index_sit_under_its_prefix() -> None:
    space = Keyspace("articles.v2")
    assert space.chunk_prefix == "articles.v2:chunk:"
    assert space.chunk("public.docs", "7", "ab@300") == "articles.v2:chunk:public.docs:7:ab@300"
    assert space.row("public.docs", "7") == "articles.v2:row:public.docs:7"
    assert space.floor("public.docs") == "articles.v2:floor:public.docs"
    assert space.meta == "articles.v2:meta"


@given(key_values, st.text(alphabet="0123456789abcdef", min_size=1), st.integers(0, 2**64 - 1))
def test_a_row_key_is_read_back_from_its_chunk_and_manifest_keys(
    values: tuple[str, ...], text_hash: str, lsn: int
) -> None:
    space, table, key = Keyspace("docs"), "public.docs", encode_key(values)
    chunk = space.chunk(table, key, chunk_id(text_hash, Lsn(lsn), repeat=lsn % 3))
    assert space.row_of_chunk(chunk, table) == key
    assert decode_key(space.row_of_chunk(chunk, table)) == values
    row = space.row(table, key)
    assert space.table_of_row(row) == table
    assert space.key_from_row(row, table) == key


def test_patterns_match_one_table_and_one_index_only() -> None:
    space = Keyspace("docs")
    assert fnmatchcase(space.chunk("public.a", "1", "h@1"), space.chunk_pattern("public.a"))
    assert not fnmatchcase(space.chunk("public.ab", "1", "h@1"), space.chunk_pattern("public.a"))
    assert not fnmatchcase(
        Keyspace("docs.v2").chunk("public.a", "1", "h@1"), space.chunk_pattern("public.a")
    )
    assert fnmatchcase(space.row("public.a", "1"), space.row_pattern("public.a"))
    assert not fnmatchcase(space.row("public.ab", "1"), space.row_pattern("public.a"))
    assert fnmatchcase(space.row("public.ab", "1"), space.row_pattern())
    assert not fnmatchcase(space.chunk("public.a", "1", "h@1"), space.row_pattern())


def test_the_connectors_own_keys_lie_outside_every_index_prefix() -> None:
    """A rebuild unlinks a physical index's prefix: the record, the dead letters and the
    checkpoint must survive it (index names never hold a `.` nor are `connector`)."""
    own = [alias_key("docs"), deadletter_key("docs"), checkpoint_key("slot")]
    assert own == ["connector:index:docs", "connector:deadletter:docs", "connector:slot:checkpoint"]
    for prefix in ("docs", "docs.v1", "docs.v2"):
        space = Keyspace(prefix)
        patterns = [space.chunk_pattern("public.docs"), space.row_pattern(), f"{prefix}:*"]
        assert not [k for k in own for p in patterns if fnmatchcase(k, p)]

"""The table model (connector.core.tables): pure, no servers."""

from __future__ import annotations

from typing import Any

from connector.config import TableSettings
from connector.core.tables import TableInfo, gone_columns, routes


def table(name: str, key: tuple[str, ...] = ("id",), **settings: Any) -> TableInfo:
    leaves = frozenset(settings.pop("leaves", ()))
    configured = TableSettings.model_validate({"name": name, "content": ["body"], **settings})
    return TableInfo(configured, key, "d", {}, partitioned=bool(leaves), leaves=leaves)


def test_a_table_is_named_schema_dot_table_as_wal2json_names_it() -> None:
    assert table("docs").name == "public.docs"
    assert table("app.docs").name == "app.docs"


def test_columns_read_are_key_content_metadata_each_once_in_that_order() -> None:
    info = table(
        "docs",
        key=("tenant", "id"),
        content=["title", "body", "title"],
        metadata={"id": "tag", "lang": "tag", "tenant": "tag"},
    )
    assert info.columns == ("tenant", "id", "title", "body", "lang")


def test_full_identity_is_replica_identity_full_only() -> None:
    full = TableInfo(table("docs").settings, ("id",), "f", {})
    assert full.full_identity
    assert not [r for r in "dni" if TableInfo(full.settings, ("id",), r, {}).full_identity]


def test_routes_send_each_leaf_partition_to_its_configured_table() -> None:
    events = table("events", leaves={"public.events_2024", "archive.events_2023"})
    docs = table("docs")
    found = routes([docs, events])
    assert found == {
        "public.docs": docs,
        "public.events": events,
        "public.events_2024": events,
        "archive.events_2023": events,
    }
    assert routes([]) == {}


def test_a_change_without_its_columns_names_them_and_the_fix() -> None:
    info = table("docs", metadata={"lang": "tag"})
    both = gone_columns(info, "INSERT", ["body", "lang"])
    assert "table public.docs: the INSERT has no content column(s) body and metadata" in both
    assert "column(s) lang: dropped or renamed?" in both
    assert "fix [[tables]] content" in both and "--table public.docs" in both
    only_metadata = gone_columns(info, "UPDATE", ["lang"], " (read back)")
    assert "has no metadata column(s) lang (read back): dropped" in only_metadata
    assert "fix [[tables]] metadata" in only_metadata and "content column" not in only_metadata

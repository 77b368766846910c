"""Numbers in tag filters over HTTP: a JSON number on a tag field matches the tag written from
a column of the same value (integers exactly, at any size: a bigint id past 2**53, a numeric
of 30 digits; a float8 as Postgres prints it; booleans as boolean columns are tagged), and a
range on a tag field is a 400 naming the field. Through the real daemon and `connector serve`
on loopback; `verify` is clean, every current row is found by a word of its own, the deleted
one by none."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import psycopg

from connector.config import Settings
from connector.testing.daemon import DaemonThread
from tests.support import assert_index_equals_table, make_settings, serving, synced

Start = Callable[[Settings], DaemonThread]
BIG = 123456789012345678901234567890
PAST_FLOAT = 2**53 + 1  # a float holds 2**53 + 1 as 2**53: the neighbour row's id
# id, own word, tenant_id (bigint), big (numeric(40,0)), ratio (float8), flag (boolean)
ROWS = [
    (1, "aardvark", 42, BIG, 2.5, True),
    (2, "bison", PAST_FLOAT, BIG + 1, 42.0, False),
    (3, "caracal", 2**53, 7, 1e15, True),
    (4, "dingo", 43, 8, 0.1, False),  # deleted
]
GONE = 4


def _settings(dsn: str, url: str) -> Settings:
    metadata = {"tenant_id": "tag", "big": "tag", "ratio": "tag", "flag": "tag"}
    table = {"name": "public.accounts", "index": "accounts", "content": ["body"],
             "metadata": metadata}  # fmt: skip
    return make_settings(dsn, url, tables=[table])


def _create(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE accounts (id int PRIMARY KEY, body text, tenant_id bigint, "
            "big numeric(40, 0), ratio float8, flag boolean)"
        )


def _load(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for n, word, tenant, big, ratio, flag in ROWS:
            conn.execute(
                "INSERT INTO accounts VALUES (%s, %s, %s, %s, %s, %s)",
                (n, f"the account of the {word}", tenant, big, ratio, flag),
            )
        conn.execute("DELETE FROM accounts WHERE id = %s", (GONE,))


def _keys(api: httpx.Client, filters: dict[str, object], text: str = "account") -> set[int]:
    found = api.post("/v1/search", json={"text": text, "k": 10, "filters": filters})
    assert found.status_code == 200, found.text
    return {int(hit["key"][0]) for hit in found.json()["hits"]}


def test_json_numbers_on_tag_fields_match_the_column_values_exactly(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    _create(migrated_dsn)
    settings = _settings(migrated_dsn, redis_url)
    run_connector(settings)
    _load(migrated_dsn)
    synced(settings, migrated_dsn)
    with serving(settings) as api:
        wanted: list[tuple[dict[str, object], set[int]]] = [
            ({"tenant_id": 42}, {1}),
            ({"tenant_id": PAST_FLOAT}, {2}),
            ({"tenant_id": 2**53}, {3}),
            ({"tenant_id": [42, PAST_FLOAT]}, {1, 2}),
            ({"tenant_id": "42"}, {1}),
            ({"big": BIG + 1}, {2}),
            ({"big": BIG}, {1}),
            ({"ratio": 2.5}, {1}),
            ({"ratio": 42}, {2}),
            ({"ratio": 42.0}, {2}),
            ({"ratio": 1e15}, {3}),
            ({"flag": True}, {1, 3}),
            ({"flag": False}, {2}),
            ({"tenant_id": 43}, set()),  # the deleted row
        ]
        wrong = [(f, got) for f, want in wanted if (got := _keys(api, f)) != want]
        assert not wrong, wrong
        refused = api.post(
            "/v1/search", json={"text": "account", "filters": {"tenant_id": {"min": 1, "max": 50}}}
        )
        assert refused.status_code == 400, refused.text
        assert "tenant_id" in refused.json()["error"] and "range" in refused.json()["error"]
        for n, word, tenant, *_rest in ROWS:
            own = _keys(api, {"tenant_id": tenant}, text=word)
            assert own == (set() if n == GONE else {n}), (word, own)
    assert_index_equals_table(settings, migrated_dsn)

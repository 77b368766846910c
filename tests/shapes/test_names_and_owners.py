"""Several indexes and daemons on one Redis: index names that look like another index's next
version (`articles` and `articles_v2`, `docs` and `docs_v1`) stay two indexes through a rebuild;
daemons of several slots, each with its own tables, run side by side; a daemon of another slot
on an index that is taken refuses to start, names the owner and the fix, and `connector slot
take-over` hands the index over."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import redis
from pydantic import ValidationError

from connector.config import Settings
from connector.errors import ConfigError
from connector.query import searcher
from connector.sink.layout import Physical, read_built, read_owner, read_record
from connector.sink.redis_client import command, connect
from connector.sink.schema import schema_args
from connector.testing.config import write_config
from connector.testing.daemon import DaemonThread
from tests.support import assert_index_equals_table, cli, keys_of, make_settings, synced

Start = Callable[[Settings], DaemonThread]


def _table(name: str, index: str) -> dict[str, object]:
    return {"name": f"public.{name}", "index": index, "content": ["body"], "chunk_tokens": 64,
            "chunk_overlap": 8}  # fmt: skip


def _word(table: str, n: int) -> str:
    """A word only row `n` of `table` has."""
    letters = "".join(chr(ord("a") + (n // 26**i) % 26) for i in range(3))
    return f"{table.replace('_', '')}{letters}q"


class Rows:
    """Rows of one table (`id`, `body`), each with a word of its own; what is there and gone."""

    def __init__(self, dsn: str, table: str) -> None:
        self.dsn, self.table = dsn, table
        self.live: set[int] = set()
        self.gone: set[int] = set()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, body text NOT NULL)")

    def insert(self, first: int, last: int) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn, conn.transaction():
            for n in range(first, last + 1):
                conn.execute(
                    f"INSERT INTO {self.table} VALUES (%s, %s)",
                    (n, f"row {n} of {self.table} says {_word(self.table, n)}"),
                )
                self.live.add(n)

    def change(self, updated: range, deleted: range) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn, conn.transaction():
            for n in updated:
                conn.execute(
                    f"UPDATE {self.table} SET body = body || ' (edited)' WHERE id = %s", (n,)
                )
            for n in deleted:
                conn.execute(f"DELETE FROM {self.table} WHERE id = %s", (n,))
                self.live.discard(n)
                self.gone.add(n)

    def assert_found(self, settings: Settings, index: str) -> None:
        """Every current row found by its own word, no gone one."""
        synced(settings, self.dsn)
        searching = searcher(settings, index)
        for n in sorted(self.live):
            assert (str(n),) in keys_of(searching, _word(self.table, n), k=3, hybrid=True), (
                f"{self.table} row {n} not found in index {index}"
            )
        for n in sorted(self.gone):
            assert (str(n),) not in keys_of(searching, _word(self.table, n), k=3, hybrid=True)


def _wait(what: str, done: Callable[[], bool], timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _settled(client: redis.Redis, alias: str) -> Callable[[], bool]:
    """The alias's rebuild switched and its old index dropped."""

    def done() -> bool:
        record = read_record(client, alias)
        return record is not None and record.building is None and record.retiring is None

    return done


def _indexes(client: redis.Redis) -> set[str]:
    return {name.decode() for name in command(client, "FT._LIST")}


@pytest.mark.parametrize(("first", "second"), [("articles", "articles_v2"), ("docs", "docs_v1")])
def test_a_rebuild_leaves_an_index_named_like_its_next_version_intact(
    migrated_dsn: str, redis_url: str, run_connector: Start, tmp_path: Path, first: str,
    second: str,
) -> None:  # fmt: skip
    one, two = Rows(migrated_dsn, "t_one"), Rows(migrated_dsn, "t_two")
    settings = make_settings(
        migrated_dsn, redis_url, tables=[_table("t_one", first), _table("t_two", second)],
        pipeline={"gc_grace_s": 0.3},
    )  # fmt: skip
    client = connect(redis_url)
    run_connector(settings)
    one.insert(1, 40)
    two.insert(1, 40)
    synced(settings, migrated_dsn)
    other = read_record(client, second)
    assert other is not None
    done = cli(write_config(tmp_path / "c.toml", settings), "reindex", "--table", "public.t_one")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"index {first} now answers from" in done.stdout, done.stdout
    one.change(updated=range(1, 6), deleted=range(6, 11))
    two.change(updated=range(1, 6), deleted=range(6, 11))
    one.insert(41, 50)
    two.insert(41, 50)
    _wait("the old index to be dropped", _settled(client, first))
    assert read_record(client, second) == other, "the rebuild touched the other index's record"
    rebuilt = read_record(client, first)
    assert rebuilt is not None and rebuilt.serial == 2
    assert _indexes(client) == {rebuilt.current.name, other.current.name}
    assert_index_equals_table(settings, migrated_dsn)
    one.assert_found(settings, first)
    two.assert_found(settings, second)
    client.close()


def test_several_daemons_with_their_own_slots_share_one_redis(
    migrated_dsn: str, redis_url: str, run_connector: Start, tmp_path: Path
) -> None:
    names = {"s_one": ("t_one", "articles"), "s_two": ("t_two", "articles_v2"),
             "s_three": ("t_three", "docs_v1")}  # fmt: skip
    rows = {slot: Rows(migrated_dsn, table) for slot, (table, _index) in names.items()}
    daemons = {
        slot: make_settings(migrated_dsn, redis_url, tables=[_table(table, index)],
                            postgres={"slot": slot}, pipeline={"gc_grace_s": 0.3})
        for slot, (table, index) in names.items()
    }  # fmt: skip
    for settings in daemons.values():
        run_connector(settings)
    for n, table_rows in enumerate(rows.values()):
        table_rows.insert(1, 30 + n)
        table_rows.change(updated=range(1, 5), deleted=range(5, 9))
    # A rebuild of `articles` while the others stream: its next index is not `articles_v2`.
    config = write_config(tmp_path / "one.toml", daemons["s_one"])
    done = cli(config, "reindex")
    assert done.returncode == 0, done.stdout + done.stderr
    for table_rows in rows.values():
        table_rows.insert(100, 110)
    client = connect(redis_url)
    _wait("the old index to be dropped", _settled(client, "articles"))
    for slot, settings in daemons.items():
        index = names[slot][1]
        assert_index_equals_table(settings, migrated_dsn)
        rows[slot].assert_found(settings, index)
        record = read_record(client, index)
        assert record is not None
        owner = read_owner(client, record.current)
        assert owner is not None and owner.slot == slot, (index, owner)
    client.close()


def test_a_daemon_of_another_slot_refuses_an_index_that_is_taken_until_it_is_handed_over(
    migrated_dsn: str, redis_url: str, run_connector: Start, tmp_path: Path
) -> None:
    rows = Rows(migrated_dsn, "t_one")
    first = make_settings(migrated_dsn, redis_url, tables=[_table("t_one", "shared")],
                          postgres={"slot": "s_first"})  # fmt: skip
    second = make_settings(migrated_dsn, redis_url, tables=[_table("t_one", "shared")],
                           postgres={"slot": "s_second"})  # fmt: skip
    client = connect(redis_url)
    running = run_connector(first)
    rows.insert(1, 30)
    synced(first, migrated_dsn)
    with pytest.raises(ConfigError) as refused:
        run_connector(second)
    said = str(refused.value)
    for part in ("index shared", "slot s_first", "slot s_second", "another index name",
                 "connector slot take-over --index shared"):  # fmt: skip
        assert part in said, said
    assert read_record(client, "shared") is not None
    config = write_config(tmp_path / "second.toml", second)
    busy = cli(config, "slot", "take-over")  # while the first one streams
    assert busy.returncode != 0 and "slot s_first is in use" in busy.stderr, busy.stderr
    rows.change(updated=range(1, 4), deleted=range(4, 7))
    assert_index_equals_table(first, migrated_dsn)
    rows.assert_found(first, "shared")

    running.stop()
    handed = cli(config, "slot", "take-over")
    assert handed.returncode == 0, handed.stdout + handed.stderr
    assert "index shared: owned by slot s_second (was s_first)" in handed.stdout, handed.stdout
    with pytest.raises(ConfigError, match="slot s_second"):  # the first one now refuses
        run_connector(first)
    run_connector(second)
    rows.insert(31, 40)
    rows.change(updated=range(31, 33), deleted=range(33, 35))
    assert_index_equals_table(second, migrated_dsn)
    rows.assert_found(second, "shared")
    record = read_record(client, "shared")
    assert record is not None and record.current.name == "shared.v1"
    owner = read_owner(client, record.current)
    assert owner is not None and owner.slot == "s_second" and owner.system_id, owner
    client.close()


@pytest.mark.parametrize(
    ("section", "said"),
    [
        ({"tables": [{"name": "public.connector", "content": ["body"]}]}, "index name 'connector'"),
        ({"tables": [_table("t", "connector")]}, "index name 'connector'"),
        ({"tables": [_table("t", "articles.v2")]}, "letters, digits, _ and - only"),
        ({"postgres": {"slot": "index"}}, "slot 'index' is reserved"),
    ],
)
def test_names_that_reach_the_connectors_own_keys_are_refused_at_load(
    section: dict[str, object], said: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(said)):
        Settings(**{"tables": [_table("t", "t")], **section})


def test_adoption_takes_a_connectors_index_under_its_own_name_and_leaves_any_other_alone(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    rows = Rows(migrated_dsn, "t_one")
    settings = make_settings(migrated_dsn, redis_url, tables=[_table("t_one", "docs")])
    client = connect(redis_url)
    running = run_connector(settings)
    rows.insert(1, 20)
    synced(settings, migrated_dsn)
    running.stop()
    # What a connector before aliases left: the index `docs` itself over `docs:`, no record.
    built = read_built(client, Physical("docs.v1", "docs"))
    assert built is not None
    command(client, "FT.DROPINDEX", "docs.v1")
    client.delete("connector:index:docs")
    client.hdel("docs:meta", "owner_slot", "owner_system_id")
    command(client, *schema_args(built.spec("docs", Physical("docs", "docs")), built.dimensions))
    run_connector(settings)
    record = read_record(client, "docs")
    assert record is not None and record.current == Physical("docs.v1", "docs")
    assert _indexes(client) == {"docs.v1"}
    rows.insert(21, 25)
    assert_index_equals_table(settings, migrated_dsn)
    rows.assert_found(settings, "docs")

    # An index named like a configured one that no connector built: refused, left as it is.
    command(client, "FT.CREATE", "notes", "ON", "HASH", "PREFIX", "1", "mine:", "SCHEMA",
            "title", "TEXT")  # fmt: skip
    client.hset("mine:1", "title", "a note of the application's own")
    other = make_settings(migrated_dsn, redis_url, tables=[_table("t_one", "notes")],
                          postgres={"slot": "s_notes"})  # fmt: skip
    with pytest.raises(ConfigError, match="did not build") as refused:
        run_connector(other)
    assert "FT.DROPINDEX notes" in str(refused.value) and "another index name" in str(refused.value)
    assert command(client, "FT.INFO", "notes")[b"index_name"] == b"notes"
    assert client.hget("mine:1", "title") and read_record(client, "notes") is None
    client.close()


def test_an_index_name_an_earlier_connectors_rebuilt_index_uses_is_refused(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    Rows(migrated_dsn, "t_one")
    client = connect(redis_url)
    # The record an earlier connector left after a rebuild of `articles`: `articles_v2`.
    client.hset("connector:index:articles", mapping={
        "current": "articles_v2", "current_prefix": "articles_v2", "serial": "2"})  # fmt: skip
    settings = make_settings(migrated_dsn, redis_url, tables=[_table("t_one", "articles_v2")])
    with pytest.raises(ConfigError, match="index name articles_v2 is taken") as refused:
        run_connector(settings)
    said = str(refused.value)
    assert "index articles" in said and "another index name" in said, said
    assert "connector reindex" in said, said
    assert read_record(client, "articles_v2") is None and not _indexes(client)
    client.close()

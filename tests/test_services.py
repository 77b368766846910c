"""The foundation: the harness's Postgres speaks wal2json, its Redis Stack does vector search."""

import json
import struct

import psycopg
import pytest
import redis
from redis.commands.search.field import TagField, VectorField
from redis.commands.search.index_definition import IndexDefinition, IndexType
from redis.commands.search.query import Query

from connector.source.migrate import apply_migrations


def test_wal2json_slot_reads_back_the_changes(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
        conn.execute("SELECT pg_create_logical_replication_slot('t_slot', 'wal2json')")
        conn.execute("INSERT INTO notes VALUES (1, 'one'), (2, 'two')")
        conn.execute("UPDATE notes SET body = 'uno' WHERE id = 1")
        conn.execute("DELETE FROM notes WHERE id = 2")
        rows = conn.execute(
            "SELECT data FROM pg_logical_slot_get_changes('t_slot', NULL, NULL, "
            "'format-version', '2', 'include-pk', '1')"
        ).fetchall()
    records = [json.loads(data) for (data,) in rows]
    changes = [r for r in records if r["action"] in "IUD"]
    assert [c["action"] for c in changes] == ["I", "I", "U", "D"]
    assert changes[0]["columns"] == [
        {"name": "id", "type": "integer", "value": 1},
        {"name": "body", "type": "text", "value": "one"},
    ]
    assert {"name": "body", "type": "text", "value": "uno"} in changes[2]["columns"]
    assert changes[3]["identity"] == [{"name": "id", "type": "integer", "value": 2}]


def test_redis_stack_knn_and_waitaof(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.ft("vec").create_index(
        [
            TagField("kind"),
            VectorField(
                "embedding", "HNSW", {"TYPE": "FLOAT32", "DIM": 3, "DISTANCE_METRIC": "COSINE"}
            ),
        ],
        definition=IndexDefinition(prefix=["vec:"], index_type=IndexType.HASH),
    )
    vectors = {"a": (1.0, 0.0, 0.0), "b": (0.0, 1.0, 0.0), "c": (0.7, 0.7, 0.0)}
    for name, vector in vectors.items():
        client.hset(f"vec:{name}", mapping={"kind": name, "embedding": struct.pack("3f", *vector)})
    query = Query("*=>[KNN 3 @embedding $v AS score]").sort_by("score").dialect(2)
    result = client.ft("vec").search(query, {"v": struct.pack("3f", 0.9, 0.1, 0.0)})
    assert [doc.id for doc in result.docs] == ["vec:a", "vec:c", "vec:b"]
    local, replicas = client.execute_command("WAITAOF", 1, 0, 1000)
    assert (local, replicas) == (1, 0)
    client.close()


def test_migrations_apply_twice(pg_dsn: str) -> None:
    first = apply_migrations(pg_dsn)
    assert first.applied == ["001_documents.sql", "002_connector_role.sql"]
    second = apply_migrations(pg_dsn)
    assert second.applied == []
    assert second.skipped == first.applied
    with psycopg.connect(pg_dsn) as conn:
        identity = conn.execute(
            "SELECT relreplident FROM pg_class WHERE relname = 'documents'"
        ).fetchone()
    assert identity == ("f",)


def test_replication_role_can_create_a_slot_and_read(migrated_dsn: str) -> None:
    with psycopg.connect(migrated_dsn, autocommit=True) as admin:
        admin.execute("INSERT INTO documents (title, body) VALUES ('t', 'b')")
    role_dsn = psycopg.conninfo.make_conninfo(migrated_dsn, user="connector")
    with psycopg.connect(role_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM documents").fetchone() == (1,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM documents")
    with psycopg.connect(role_dsn, autocommit=True, replication="database") as repl:
        row = repl.execute("CREATE_REPLICATION_SLOT role_slot LOGICAL wal2json").fetchone()
    assert row is not None and row[0] == "role_slot"

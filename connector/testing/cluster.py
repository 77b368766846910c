"""A throwaway Redis Cluster: three Redis Stack primaries (no replicas) on loopback ports.

Each node is the same redis-stack-server, with the same modules, AOF and options as the single
`RedisStackServer`, plus `cluster-enabled yes`. The 16384 hash slots are split evenly between the
nodes with CLUSTER ADDSLOTSRANGE and the nodes are joined with CLUSTER MEET (what
`redis-cli --cluster create` does), then `start()` waits until every node reports
`cluster_state:ok` and sees the same slot map.

RediSearch runs on each node on its own (Redis Stack has no search coordinator), and it declares
an index name as a key: a node answers FT.CREATE/FT.SEARCH/FT.INFO for an index only if it owns
the name's hash slot (else MOVED). One index per node therefore needs one name per node, such as
`"idx" + cluster.hash_tag_on(i)`; each such index holds only its node's documents.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import redis
from redis.crc import key_slot

from connector.errors import ServiceError
from connector.testing.services import RedisStackServer, free_port

SLOTS = 16384


@dataclass
class ClusterNode(RedisStackServer):
    """One cluster-enabled Redis Stack node; its cluster bus listens on `bus_port`."""

    bus_port: int = 0
    node_timeout_ms: int = 5000

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def nodes_conf(self) -> Path:
        return self.root / "nodes.conf"

    def command(self) -> tuple[list[str], dict[str, str]]:
        if not self.bus_port:
            self.bus_port = free_port()
        args, env = super().command()
        args += [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(self.nodes_conf),
            # The default bus port is port + 10000, which can overflow for high ephemeral ports.
            "--cluster-port",
            str(self.bus_port),
            "--cluster-node-timeout",
            str(self.node_timeout_ms),
        ]
        return args, env

    def client(self) -> redis.Redis:
        """A plain (non-cluster) client to this node alone."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10)


def slot_ranges(nodes: int) -> list[tuple[int, int]]:
    """The 16384 slots split into `nodes` contiguous, inclusive, near-equal ranges."""
    bounds = [SLOTS * i // nodes for i in range(nodes + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(nodes)]


class RedisClusterServers:
    """`nodes` Redis Stack primaries under `root`, joined into one cluster by `start()`."""

    def __init__(self, root: Path, nodes: int = 3, appendfsync: str = "everysec") -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.root = root
        self.nodes = [ClusterNode(root / f"node{i}", appendfsync=appendfsync) for i in range(nodes)]
        self.start_seconds: float | None = None

    @property
    def url(self) -> str:
        """The first node's URL, enough for `redis.RedisCluster.from_url` to find the rest."""
        return self.nodes[0].url

    @property
    def node_urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def slots_of(self, index: int) -> tuple[int, int]:
        """The inclusive slot range node `index` serves."""
        return slot_ranges(len(self.nodes))[index]

    def hash_tag_on(self, index: int) -> str:
        """The shortest `{n}` hash tag whose keys (or index names) live on node `index`."""
        low, high = self.slots_of(index)
        tag = next(n for n in itertools.count() if low <= key_slot(str(n).encode()) <= high)
        return f"{{{tag}}}"

    def client(self) -> redis.RedisCluster:
        """A cluster client (call `.close()` on it when done)."""
        return redis.RedisCluster.from_url(self.url)

    def start(self, timeout_s: float = 30) -> None:
        began = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            for node in self.nodes:
                node.start()
            if not self._already_formed():
                self._form()
            self._wait_ok(began + timeout_s)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began

    def _already_formed(self) -> bool:
        """True after a restart: the nodes kept their slots in nodes.conf."""
        with self.nodes[0].client() as conn:
            info = _cluster_info(conn)
        return int(info.get("cluster_slots_assigned", "0")) == SLOTS

    def _form(self) -> None:
        first = self.nodes[0]
        for epoch, (node, (low, high)) in enumerate(
            zip(self.nodes, slot_ranges(len(self.nodes)), strict=True), start=1
        ):
            with node.client() as conn:
                _command(conn, "CLUSTER", "ADDSLOTSRANGE", low, high)
                # Distinct epochs from the start, as `redis-cli --cluster create` sets them.
                _command(conn, "CLUSTER", "SET-CONFIG-EPOCH", epoch)
        with first.client() as conn:
            for node in self.nodes[1:]:
                _command(conn, "CLUSTER", "MEET", "127.0.0.1", node.port, node.bus_port)

    def _wait_ok(self, deadline: float) -> None:
        pending = list(self.nodes)
        last: dict[str, str] = {}
        while pending:
            node = pending[0]
            with node.client() as conn:
                last = _cluster_info(conn)
            if (
                last.get("cluster_state") == "ok"
                and int(last.get("cluster_known_nodes", "0")) == len(self.nodes)
                and int(last.get("cluster_slots_ok", "0")) == SLOTS
            ):
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"Redis Cluster node on port {node.port} not ready: {last}; log: {node.logfile}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisClusterServers:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _command(conn: redis.Redis, *args: str | int) -> object:
    return conn.execute_command(*args)  # type: ignore[no-untyped-call]


def _cluster_info(conn: redis.Redis) -> dict[str, str]:
    raw = _command(conn, "CLUSTER", "INFO")
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    fields = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in fields}

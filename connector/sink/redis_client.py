"""The one place the connector makes Redis clients and runs raw commands (typed)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.typing import EncodableT, FieldT

from connector.config import RedisSettings
from connector.core.engine import check_client
from connector.core.replies import check_complete

Fields = dict[FieldT, EncodableT]
K = TypeVar("K", str, bytes)


def connect(url: str, settings: RedisSettings | None = None) -> redis.Redis:
    """A client for `url` (redis:// or rediss://, ACL user and password in the URL), with the
    timeouts of `settings` (their defaults when None), never redis-py's own.

    RESP3 always, whatever the redis-py default: FT.SEARCH replies are then maps. redis-py's
    own retries are off: a command that fails is the connector's to retry (a batch write
    retried blindly inside the client would be sent again and again). A redis-py release that
    loses search results is refused here, before any client is made (core.engine)."""
    check_client(redis.__version__)
    timeouts = settings or RedisSettings()
    if timeouts.cluster:
        # The cluster client speaks the same commands; every call the connector makes is
        # single-key, per-key pipelined, or routed to a node (FT.*, WAITAOF, CONFIG).
        cluster = redis.RedisCluster.from_url(
            url,
            protocol=3,
            socket_keepalive=True,
            socket_connect_timeout=timeouts.connect_timeout_s,
            socket_timeout=timeouts.socket_timeout_s,
        )
        return cast(redis.Redis, cluster)
    return redis.Redis.from_url(
        url,
        protocol=3,
        socket_keepalive=True,
        health_check_interval=30,
        socket_connect_timeout=timeouts.connect_timeout_s,
        socket_timeout=timeouts.socket_timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


def client_for(settings: RedisSettings) -> redis.Redis:
    """A client for the configured Redis (see `connect`)."""
    return connect(settings.url.get_secret_value(), settings)


def command(client: redis.Redis, *args: EncodableT) -> Any:
    """A raw command (FT.*, WAITAOF): redis-py does not type these."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def scan_fields(
    client: redis.Redis, match: str, *fields: str, batch: int = 1000
) -> Iterator[tuple[bytes, list[bytes | None]]]:
    """Every key matching `match` with the values of `fields` (HMGET), read in pipelined
    batches of `batch` keys."""
    yield from read_fields(client, list(client.scan_iter(match=match, count=batch)), *fields)


def read_fields(
    client: redis.Redis, keys: Sequence[K], *fields: str, batch: int = 1000
) -> Iterator[tuple[K, list[bytes | None]]]:
    """Each of `keys` with the values of `fields` (HMGET), read in pipelined batches."""
    for start in range(0, len(keys), batch):
        part = keys[start : start + batch]
        pipe = client.pipeline(transaction=False)
        for key in part:
            pipe.hmget(key, list(fields))
        yield from zip(part, pipe.execute(), strict=True)


def search_docs(reply: Any) -> list[tuple[str, dict[str, str]]]:
    """An FT.SEARCH reply (RESP3 map) as (key, fields) pairs; a reply carrying a warning
    (partial results: a query timeout, memory) raises IncompleteAnswer (core.replies)."""
    check_complete(reply)
    docs = []
    for result in reply.get(b"results", []):
        fields = result.get(b"extra_attributes", {})
        docs.append((text(result[b"id"]), {text(k): text(v) for k, v in fields.items()}))
    return docs


def search_total(reply: Any) -> int:
    return int(reply.get(b"total_results", 0))


def text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def aof_enabled(client: redis.Redis) -> bool:
    try:
        config = client.config_get("appendonly")
    except redis.ResponseError:  # CONFIG disabled (managed Redis): assume what WAITAOF says
        return True
    values = {text(k): text(v) for k, v in config.items()}
    return values.get("appendonly", "no") == "yes"


def wait_aof(client: redis.Redis, marker: str, timeout_ms: int) -> bool:
    """True once Redis has fsynced its AOF up to now, False on timeout. WAITAOF waits only for
    the calling connection's own writes, so it first writes `marker` (a tiny key): the AOF is
    one sequence, so once that write is on disk, so is every write before it (the flip of
    another connection included)."""
    with client.pipeline(transaction=False) as pipe:
        pipe.set(marker, "1")
        pipe.execute_command("WAITAOF", 1, 0, timeout_ms)  # type: ignore[no-untyped-call]
        _ok, (local, _replicas) = pipe.execute()
    return int(local) >= 1

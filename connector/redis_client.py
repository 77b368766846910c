"""The one place the connector makes Redis clients and runs raw commands (typed)."""

from __future__ import annotations

from typing import Any

import redis
from redis.typing import EncodableT, FieldT

Fields = dict[FieldT, EncodableT]


def connect(url: str) -> redis.Redis:
    """A client for `url` (redis:// or rediss://, ACL user and password in the URL).

    RESP3 always, whatever the redis-py default: FT.SEARCH replies are then maps."""
    return redis.Redis.from_url(url, protocol=3, socket_keepalive=True, health_check_interval=30)


def command(client: redis.Redis, *args: EncodableT) -> Any:
    """A raw command (FT.*, WAITAOF): redis-py does not type these."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def search_docs(reply: Any) -> list[tuple[str, dict[str, str]]]:
    """An FT.SEARCH reply (RESP3 map) as (key, fields) pairs."""
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

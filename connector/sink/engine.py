"""Reading the engine profile (core.engine) from the server: INFO server for Redis's version,
MODULE LIST for the modules'. Managed services often refuse MODULE (and some INFO sections):
then INFO modules, then FT._LIST (the search module answers, its version unknown). A refused
read never fails the caller; a lost connection does (the caller retries as it does any other).
A cluster client sends INFO and MODULE LIST to its default node: every node runs the same
server."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis

from connector.core.engine import EngineProfile, modules_in_info, modules_listed, profile_of
from connector.sink.redis_client import command


def read_profile(client: redis.Redis) -> EngineProfile:
    """The server's engine profile, read in at most four small commands."""
    server = _info(client, "server") or {}
    try:
        listed = command(client, "MODULE", "LIST")
        return profile_of(server, modules_listed(listed), "MODULE LIST")
    except redis.ResponseError:  # MODULE refused (renamed, ACL, managed service)
        pass
    info = _info(client, "modules")
    found = modules_in_info(info) if info is not None else {}
    read_from = "INFO modules" if info is not None else ""
    if "search" in found:
        return profile_of(server, found, read_from)
    try:  # the search module answers even where its version is not shown
        command(client, "FT._LIST")
    except redis.ResponseError:  # no search module (or FT._LIST refused too)
        return profile_of(server, found, read_from)
    return profile_of(server, {**found, "search": ""}, "FT._LIST")


def _info(client: redis.Redis, section: str) -> Mapping[str, Any] | None:
    try:
        info = client.info(section)
    except redis.ResponseError:
        return None
    return info if isinstance(info, Mapping) else None

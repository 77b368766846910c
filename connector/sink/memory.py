"""What Redis's memory limit means for the index, and what the connector says about it.

- At `maxmemory` under `noeviction`, Redis refuses writes: the daemon pauses (nothing is
  confirmed to Postgres) and retries; `full_message()` is the one ERROR line of such an episode.
- An `allkeys-*` policy silently evicts chunks, manifests and the checkpoint: the index drifts
  from the table with no error. The connector refuses to start under it unless
  `redis.allow_eviction = true`.
- A `volatile-*` policy evicts only keys with a TTL: tombstones and cached vectors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import redis

from connector.errors import ConfigError, RedisFull
from connector.sink.redis_client import text

log = logging.getLogger(__name__)
T = TypeVar("T")

FIX = (
    "raise maxmemory (CONFIG SET maxmemory <bytes>, and in redis.conf), give Redis more memory, "
    "or drop an index you no longer need"
)


@dataclass(frozen=True, slots=True)
class PolicyVerdict:
    """What a `maxmemory-policy` means for the index: refuse, warn, or say nothing."""

    level: Literal["refuse", "warn", "ok"]
    message: str


def eviction_policy(client: redis.Redis) -> str | None:
    """The server's `maxmemory-policy`, or None when CONFIG is refused (managed Redis)."""
    try:
        values = {text(k): text(v) for k, v in client.config_get("maxmemory-policy").items()}
    except redis.ResponseError:  # CONFIG disabled, renamed, or not in this user's ACL
        return None
    return values.get("maxmemory-policy") or None


def judge_policy(policy: str | None, allow_eviction: bool) -> PolicyVerdict:
    """The verdict on `policy` (None: it could not be read)."""
    if policy is None:
        return PolicyVerdict(
            "warn",
            "could not check Redis's maxmemory-policy (CONFIG GET is refused on this server): "
            "make sure it is noeviction, or evicted keys will make the index drift silently",
        )
    if policy.startswith("allkeys-"):
        message = (
            f"Redis's maxmemory-policy is {policy}: at maxmemory it would silently evict chunk "
            "keys, row manifests and the checkpoint, and the index would drift from the tables "
            "with no error. Fix: CONFIG SET maxmemory-policy noeviction (and in redis.conf)"
        )
        if allow_eviction:
            return PolicyVerdict("warn", message + "; going on because redis.allow_eviction = true")
        return PolicyVerdict(
            "refuse", message + ", or set redis.allow_eviction = true if you accept that"
        )
    if policy.startswith("volatile-"):
        return PolicyVerdict(
            "warn",
            f"Redis's maxmemory-policy is {policy}: at maxmemory it can evict keys with a TTL "
            "early: tombstones (a replay could then bring back a deleted row) and cached vectors "
            "(their text is embedded again). noeviction keeps them",
        )
    return PolicyVerdict("ok", "")


def check_eviction_policy(client: redis.Redis, allow_eviction: bool) -> PolicyVerdict:
    """Read and judge the policy: raise ConfigError when the index is at risk, log a warning
    when it is only partly at risk (or the policy cannot be read)."""
    verdict = judge_policy(eviction_policy(client), allow_eviction)
    if verdict.level == "refuse":
        raise ConfigError(verdict.message)
    if verdict.level == "warn":
        log.warning("%s", verdict.message)
    return verdict


def memory_usage(client: redis.Redis) -> str:
    """`used_memory X of maxmemory Y (policy P)`, from INFO memory (works while Redis is full)."""
    try:
        info = client.info("memory")
    except redis.RedisError:
        return "memory use unknown (INFO refused)"
    used = info.get("used_memory_human", "?")
    limit = info.get("maxmemory_human", "?")
    policy = info.get("maxmemory_policy", "?")
    return f"used_memory {used} of maxmemory {limit} (maxmemory-policy {policy})"


def full_message(client: redis.Redis) -> str:
    """The ERROR line for a write refused at maxmemory: what, how much, what happens, the fix."""
    return (
        f"Redis refused a write: it is at maxmemory ({memory_usage(client)}). The connector "
        "is paused: it holds its position, confirms nothing to Postgres, and retries with "
        f"backoff, catching up by itself once memory is free. Fix: {FIX}"
    )


class WritePause:
    """Runs a write; while Redis refuses it at maxmemory, waits with backoff and tries again.

    One ERROR per episode (with the memory figures and the fix), one INFO when it ends.
    `full` can be read from any thread (readiness, status); `on_change` is told when an
    episode starts (True) and ends (False), e.g. to set a metric."""

    def __init__(
        self,
        on_change: Callable[[bool], None] | None = None,
        first_delay_s: float = 0.5,
        max_delay_s: float = 30.0,
    ) -> None:
        self.on_change = on_change
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self.full_since: float | None = None

    @property
    def full(self) -> bool:
        return self.full_since is not None

    def run(self, write: Callable[[], T], client: redis.Redis, wait: Callable[[float], bool]) -> T:
        """`write()` until Redis accepts it. `wait(seconds)` sleeps and returns True when the
        caller is stopping: then RedisFull is raised (nothing was written, nothing confirmed)."""
        delay = self.first_delay_s
        while True:
            try:
                result = write()
            except redis.OutOfMemoryError:
                self.refused(client)
                if wait(delay):
                    raise RedisFull("stopped while Redis was at maxmemory") from None
                delay = min(delay * 2, self.max_delay_s)
                continue
            self.accepted()
            return result

    def refused(self, client: redis.Redis) -> None:
        if self.full_since is not None:
            return
        self.full_since = time.monotonic()
        log.error("%s", full_message(client))
        if self.on_change is not None:
            self.on_change(True)

    def accepted(self) -> None:
        if self.full_since is None:
            return
        paused = time.monotonic() - self.full_since
        self.full_since = None
        log.info("Redis accepts writes again after %.1fs at maxmemory: catching up", paused)
        if self.on_change is not None:
            self.on_change(False)

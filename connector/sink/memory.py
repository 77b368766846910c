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
from connector.sink.layout import Physical
from connector.sink.redis_client import command, text

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


def at_maxmemory(client: redis.Redis) -> bool:
    """Whether Redis uses its maxmemory (or more), by INFO memory; True when it cannot say."""
    try:
        info = client.info("memory")
    except redis.RedisError:
        return True
    limit = int(info.get("maxmemory", 0) or 0)
    return bool(limit) and int(info.get("used_memory", 0) or 0) >= limit


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

    def recheck(self, client: redis.Redis) -> None:
        """End the episode if Redis has room again (a new attempt of the daemon starts, maybe
        before any write): an attempt that only read must not end it, or the next refused
        write would start another (and log another ERROR)."""
        if self.full_since is not None and not at_maxmemory(client):
            self.accepted()

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


@dataclass(frozen=True, slots=True)
class RebuildEstimate:
    """The memory a rebuild's new index takes while the current one still exists."""

    needed: int  # bytes
    used: int
    limit: int  # maxmemory (0: none)

    @property
    def fits(self) -> bool:
        return not self.limit or self.used + self.needed <= self.limit

    def describe(self) -> str:
        limit = _megabytes(self.limit) if self.limit else "no maxmemory"
        return (
            f"about {_megabytes(self.needed)} more while both indexes exist (Redis uses "
            f"{_megabytes(self.used)} of {limit})"
        )


# Chunk hashes sampled for their size, and the share added for the rows' manifests and the
# index structures FT.INFO does not itemise. Each is measured whole (MEMORY USAGE ... SAMPLES 0):
# Redis's default measures 5 fields of a hash and multiplies, and which 5 depends on the
# server's random hash seed, so the same data gave estimates twice apart across restarts.
_SAMPLE = 200
_OVERHEAD = 1.15
# FT.INFO's sizes besides the vector index; the inverted index holds deleted documents' entries
# until RediSearch's garbage collection removes them (a swing of a few percent of the total).
_OTHER_SIZES = (b"inverted_sz_mb", b"offset_vectors_sz_mb", b"doc_table_size_mb",
                b"sortable_values_size_mb", b"key_table_size_mb")  # fmt: skip


def estimate_rebuild(client: redis.Redis, index: Physical, vector_ratio: float) -> RebuildEstimate:
    """What a copy of `index` takes when its vectors grow by `vector_ratio` (new dimensions and
    type over old): its chunk hashes (sampled, each measured whole), its vector index and its
    other index structures (FT.INFO). The same data gives the same estimate, within about 5%
    (the keys SCAN samples, and garbage not yet collected in the inverted index)."""
    info = command(client, "FT.INFO", index.name)
    docs = int(info.get(b"num_docs", 0) or 0)
    mb = 1 << 20
    vectors = float(info.get(b"vector_index_sz_mb", 0) or 0) * mb
    other = sum(float(info.get(name, 0) or 0) * mb for name in _OTHER_SIZES)
    sizes = chunk_sizes(client, index, _SAMPLE)
    hashes = docs * (sum(sizes) / len(sizes)) if sizes else 0.0
    stored_vector = vectors / docs if docs else 0.0  # per chunk, about its blob in the hash too
    hashes += docs * stored_vector * (vector_ratio - 1) / 2
    needed = (hashes + vectors * vector_ratio + other) * _OVERHEAD
    memory = client.info("memory")
    return RebuildEstimate(
        int(needed), int(memory.get("used_memory", 0)), int(memory.get("maxmemory", 0))
    )


def new_index_bytes(chunks: float, text_bytes: float, vector_bytes: int) -> int:
    """About what an index not built yet takes for `chunks` chunks of `text_bytes` of text and
    a vector of `vector_bytes` each: the chunk's hash (its text, vector and fields), its vector
    in the vector index (with the graph's links) and its words in the inverted index, about
    2 x vector + 3 x text + 1 KB (measured on Redis Stack 7.4), and the manifests' share."""
    return int(chunks * (2 * vector_bytes + 3 * text_bytes + 1024) * _OVERHEAD)


def chunk_sizes(client: redis.Redis, index: Physical, sample: int) -> list[int]:
    """The bytes of up to `sample` chunk hashes of `index`, each measured whole."""
    sizes = []
    for key in client.scan_iter(match=f"{index.prefix}:chunk:*", count=500):
        sizes.append(int(client.memory_usage(key, samples=0) or 0))
        if len(sizes) >= sample:
            break
    return sizes


def _megabytes(value: int) -> str:
    return f"{value / (1 << 20):.1f} MB"

"""Budgeted pipelines: how every writer of the connector sends its commands to Redis (staging,
garbage collection, the copies of a first start, a resync, a rebuild or a back-fill).

A writer adds commands by kind (core.budget); a pipeline is sent once the next command would
take it past the Redis-time budget (`redis.pipeline_budget_ms`) by the costs learned so far, so
a search waits behind one short pipeline, not behind dozens of HNSW insertions. Several
pipelines are in flight at once, each on a connection of its own, while the next is built:
Redis answers one while the next is already there, so it is not left idle between short
pipelines. Each answer teaches the writer's `RedisBudget` what its commands cost: the
Redis time of the pipeline, read from Redis's own clock (a TIME before and after its commands,
so the round trip and the client's Python are not counted). A cluster client's TIME would go
to any node: there, the time from send to answer counts (core.budget.ServiceClock).

How many are in flight follows the link (core.budget.InFlight). Two cover a local Redis; across
a network each answer also spends the round trip outside Redis, and with two in flight a
pipeline of 2 ms behind a 2 ms round trip left Redis idle half of the time. So each answer
also says how long it spent outside Redis (send to answer, less its Redis time by its TIMEs),
and the writer keeps one pipeline in Redis plus one per budget of the least of those times on
the way: pipelines on the way are not in Redis, so a search still waits behind about one.

A writer with a `share` below 1 (a rebuild's copy next to searches) sends one pipeline at a
time and leaves Redis alone after each for as long as it took, times (1 / share - 1).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import cast

import redis

from connector.core.budget import MOST_IN_FLIGHT, CostModel, InFlight, ServiceClock

# The senders of pipelines in flight, shared by the writers of a process (a daemon's stager and
# garbage collector, a rebuild's copier), each on a pooled connection of its own.
_SENDERS = ThreadPoolExecutor(2 * MOST_IN_FLIGHT, thread_name_prefix="connector-send")


class RedisBudget:
    """What one writer's commands cost Redis (learned) and the budget of its pipelines;
    shared by a target's writer and garbage collector, from any thread."""

    def __init__(self, budget_ms: float, share: float = 1.0) -> None:
        self.model = CostModel(budget_ms)
        self.flight = InFlight(budget_ms)
        self.share = share  # the share of time the writer may keep Redis busy
        self._clock = ServiceClock()
        self._lock = threading.Lock()

    def fits(self, counts: Counter[str], kind: str, n: int) -> bool:
        with self._lock:
            return self.model.fits(counts, kind, n)

    def estimate(self, counts: Counter[str]) -> float:
        """The estimated Redis time of a pipeline of `counts`, in ms."""
        with self._lock:
            return self.model.estimate(counts)

    def measured(self, counts: Counter[str], took_s: float) -> None:
        """A pipeline of `counts` took `took_s` of Redis time: learn from it."""
        with self._lock:
            self.model.observe(counts, took_s * 1000)

    def answered(self, answered_s: float, took_s: float) -> None:
        """A pipeline was answered `answered_s` after it was sent and took `took_s` in Redis
        (by Redis's clock): how far away Redis is."""
        with self._lock:
            self.flight.observe(answered_s * 1000, took_s * 1000)

    def depth(self) -> int:
        """The pipelines to keep in flight."""
        with self._lock:
            return self.flight.depth

    def served(self, sent: float, answered: float) -> float:
        """The Redis time of a pipeline sent at `sent`, answered at `answered`, next to the
        writer's others in flight (time.monotonic)."""
        with self._lock:
            return self._clock.served(sent, answered)


class Pipes:
    """Non-transactional pipelines cut by `budget`. With `first_alone`, the first one is sent
    and answered before any other (a writer marking a version as pending before it writes
    one). The order between later pipelines is not kept: what they write must not depend on
    it (staged versions are invisible until the flip; garbage is garbage in any order)."""

    def __init__(self, client: redis.Redis, budget: RedisBudget, first_alone: bool = False) -> None:
        self.client = client
        self.budget = budget
        self._timed = not isinstance(client, redis.RedisCluster)
        self.pipe = self._pipeline()
        self._counts: Counter[str] = Counter()
        self._first = first_alone
        self._sent: deque[Future[float]] = deque()

    def add(self, kind: str, n: int = 1) -> redis.client.Pipeline:
        """The pipeline to queue `n` commands of `kind` on: the current one, or a new one once
        the current one is sent (they would take it past the budget)."""
        if not self.budget.fits(self._counts, kind, n):
            self.send()
        self._counts[kind] += n
        return self.pipe

    def send(self) -> None:
        if not self._counts:
            return
        pipe, counts = self.pipe, self._counts
        self.pipe, self._counts = self._pipeline(), Counter()
        if self._first or self.budget.share < 1.0:  # answered here (paced: then a pause)
            self._first = False
            took = self._execute(pipe, counts)
            if self.budget.share < 1.0:
                time.sleep(took * (1.0 / self.budget.share - 1.0))
            return
        while len(self._sent) >= self.budget.depth():
            self._sent.popleft().result()
        self._sent.append(_SENDERS.submit(self._execute, pipe, counts))

    def _pipeline(self) -> redis.client.Pipeline:
        pipe = self.client.pipeline(transaction=False)
        if self._timed:
            pipe.time()  # Redis's clock as it begins the pipeline's commands
        return pipe

    def _execute(self, pipe: redis.client.Pipeline, counts: Counter[str]) -> float:
        """Send `pipe`, learn its Redis time (seconds), which it returns."""
        sent = time.monotonic()
        if not self._timed:
            pipe.execute()
            took = self.budget.served(sent, time.monotonic())
        else:
            pipe.time()  # ... and as it ends them
            replies = pipe.execute()
            took = _seconds(replies[-1]) - _seconds(replies[0])
            self.budget.answered(time.monotonic() - sent, took)
        self.budget.measured(counts, took)
        return took

    def __enter__(self) -> Pipes:
        return self

    def __exit__(self, kind: object, *_exc: object) -> None:
        try:
            if kind is None:
                self.send()
            while self._sent:  # every pipeline is answered before the caller goes on
                sent = self._sent.popleft()
                if kind is None:
                    sent.result()
                else:
                    sent.exception()
        finally:
            self._sent.clear()
            self.pipe.reset()


def _seconds(reply: object) -> float:
    """A TIME reply (seconds, microseconds) in seconds."""
    seconds, micros = cast(tuple[int, int], reply)
    return int(seconds) + int(micros) / 1e6

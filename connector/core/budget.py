"""The Redis-time budget of the writers' pipelines: what each kind of command costs Redis's one
thread, learned from measured pipelines, and how many commands fit in a pipeline.

Redis Stack inserts a vector into its HNSW graph on its main thread while searches wait: a
pipeline of HSETs holds Redis for the sum of their insertions (about 0.45 ms each at 384
dimensions, 1.3 ms at 1536, more for dense data), and a search that arrives meanwhile waits for
it. Every writer (staging, garbage collection, the copies) therefore cuts its pipelines by their
cost in Redis time, not by a command count: a pipeline holds commands until their estimated cost
reaches the budget (`redis.pipeline_budget_ms`), and the estimate follows what Redis actually
took (`CostModel.observe`), per kind of command (an HSET with a vector in a given index, a
delete of an indexed hash, a write of an unindexed key).

`ServiceClock` turns the send and answer times of pipelines kept in flight on several
connections into the time Redis spent on each: Redis answers them one after the other, so a
pipeline's service begins when it was sent or when the one answered before it ended, whichever
is later.

`InFlight` is how many pipelines a writer keeps in flight: one in Redis, plus enough on the way
to cover the link's round trip, so that Redis has the next pipeline as it finishes one however
far away it is.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

# What a command of an unseen kind is assumed to cost, in ms, until it is measured: an HSET
# with a vector like an HNSW insertion at high dimensions (the first pipelines are short), any
# other command like a small write.
VECTOR_PRIOR_MS = 1.0
DELETE_PRIOR_MS = 0.3
WRITE_PRIOR_MS = 0.01
_MIN_COST_MS = 0.001
_MAX_COST_MS = 1000.0
# Pipelines of one writer in flight at once: never fewer (Redis answers one while the next is
# already there), never more (however slow the link: what is left waits in the writer).
LEAST_IN_FLIGHT = 2
MOST_IN_FLIGHT = 16


def vector_kind(index: str) -> str:
    """The kind of an HSET that inserts a vector into `index` (re-indexes a whole document)."""
    return f"vector:{index}"


def delete_kind(index: str) -> str:
    """The kind of a DEL/UNLINK of a document of `index` (removed from the index too)."""
    return f"delete:{index}"


WRITE_KIND = "write"  # a write of a key no index covers (a manifest, a floor, a stream entry)


def prior_ms(kind: str) -> float:
    if kind.startswith("vector:"):
        return VECTOR_PRIOR_MS
    if kind.startswith("delete:"):
        return DELETE_PRIOR_MS
    return WRITE_PRIOR_MS


@dataclass(slots=True)
class CostModel:
    """Milliseconds of Redis time per command, by kind: an exponentially weighted average of
    what measured pipelines took, each pipeline's time shared out among its kinds in proportion
    to their estimated part of it (a kind that made up little of a pipeline learns little from
    it). `weight` is how much one pipeline moves the estimate."""

    budget_ms: float
    weight: float = 0.2
    costs: dict[str, float] = field(default_factory=dict)

    def cost(self, kind: str) -> float:
        """The estimated cost of one command of `kind`, in ms."""
        found = self.costs.get(kind)
        return prior_ms(kind) if found is None else found

    def estimate(self, counts: Mapping[str, int]) -> float:
        """The estimated cost of a pipeline of `counts` commands by kind, in ms."""
        return sum(self.cost(kind) * n for kind, n in counts.items())

    def fits(self, counts: Mapping[str, int], kind: str, n: int = 1) -> bool:
        """Whether `n` more commands of `kind` keep a pipeline of `counts` within the budget
        (an empty pipeline takes anything: a command costlier than the budget goes alone)."""
        if not any(counts.values()):
            return True
        return self.estimate(counts) + n * self.cost(kind) <= self.budget_ms

    def observe(self, counts: Mapping[str, int], took_ms: float) -> None:
        """A pipeline of `counts` commands took `took_ms` of Redis time."""
        predicted = self.estimate(counts)
        if predicted <= 0 or took_ms < 0:
            return
        ratio = took_ms / predicted
        for kind, n in counts.items():
            if n <= 0:
                continue
            old = self.cost(kind)
            share = n * old / predicted
            new = old + self.weight * share * (old * ratio - old)
            self.costs[kind] = min(_MAX_COST_MS, max(_MIN_COST_MS, new))


@dataclass(slots=True)
class ServiceClock:
    """The Redis time of each pipeline of a writer that keeps several in flight: Redis serves
    them one at a time, so each one's service starts when it was sent or when Redis finished
    the one answered before it, whichever is later (times in seconds, any monotonic clock)."""

    busy_until: float = 0.0

    def served(self, sent: float, answered: float) -> float:
        """The seconds Redis spent on a pipeline sent at `sent` and answered at `answered`."""
        began = max(sent, self.busy_until)
        self.busy_until = max(self.busy_until, answered)
        return max(0.0, answered - began)


@dataclass(slots=True)
class InFlight:
    """How many pipelines of about `budget_ms` of Redis time a writer keeps in flight: one in
    Redis, plus one per `budget_ms` (rounded up) of the link's round trip, so that Redis has the
    next pipeline as it finishes one however far away it is (2 on a local link, 3 across a
    millisecond each way, 6 across 10 ms).

    The round trip is the least *outside* time of the last `window` answers (send to answer,
    less the Redis time between the TIMEs around the pipeline's commands), not their mean: a
    busy client is slow to send and to read some answers (its other threads hold the GIL, the
    machine is loaded), and a window sized on a mean that counts this grows with every
    pipeline queued in the client, then in Redis, where searches wait behind them (measured on
    a local Redis under ingest: search p99 two to three times higher, ingest twice faster).
    The least outside time is the link's, which more pipelines in flight do not lengthen. A
    link that stalls now and then (a proxy without TCP_NODELAY holds about one answer in eight
    for 40 ms) costs more than that, and is not covered: its least time is a local link's."""

    budget_ms: float
    window: int = 32
    outside_ms: deque[float] = field(default_factory=deque)

    def observe(self, answered_ms: float, redis_ms: float) -> None:
        """A pipeline was answered `answered_ms` after it was sent; its commands took `redis_ms`
        in Redis, by its TIMEs."""
        self.outside_ms.append(max(0.0, answered_ms - redis_ms))
        if len(self.outside_ms) > self.window:
            self.outside_ms.popleft()

    @property
    def depth(self) -> int:
        """The pipelines to keep in flight."""
        if not self.outside_ms:
            return LEAST_IN_FLIGHT
        covering = math.ceil(min(self.outside_ms) / self.budget_ms)
        return min(MOST_IN_FLIGHT, max(LEAST_IN_FLIGHT, 1 + covering))

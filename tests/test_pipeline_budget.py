"""The Redis-time budget against the real Redis Stack (sink.pipes): a writer's pipelines of
vector HSETs are cut so that each holds Redis about `redis.pipeline_budget_ms`, by a cost per
HSET learned from what Redis took, close to what Redis itself reports (INFO commandstats)."""

from __future__ import annotations

from typing import Any

import redis

from connector.core.budget import WRITE_KIND, vector_kind
from connector.embed import HashingEmbedder
from connector.sink.pipes import Pipes, RedisBudget

BUDGET_MS = 2.0
INDEX = "budgeted"
DIMENSIONS = 384
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
]


class Recording:
    """The client, noting how many vector HSETs each pipeline it executes holds."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.sizes: list[int] = []

    def pipeline(self, transaction: bool = True) -> Any:
        pipe = self.client.pipeline(transaction=transaction)
        execute = pipe.execute

        def recorded(raise_on_error: bool = True) -> Any:
            self.sizes.append(sum(1 for args, _ in pipe.command_stack if args[0] == "HSET"))
            return execute(raise_on_error)

        pipe.execute = recorded  # type: ignore[method-assign]
        return pipe


def _texts(count: int) -> list[str]:
    return [" ".join(WORDS[(n * 7 + i * 3) % len(WORDS)] for i in range(40)) + f" {n}"
            for n in range(count)]  # fmt: skip


def test_vector_writes_go_out_in_pipelines_of_about_the_budget(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.execute_command(
        "FT.CREATE", INDEX, "PREFIX", "1", f"{INDEX}:chunk:", "SCHEMA", "content", "TEXT",
        "embedding", "VECTOR", "HNSW", "6", "TYPE", "FLOAT32", "DIM", DIMENSIONS,
        "DISTANCE_METRIC", "COSINE",
    )  # fmt: skip
    texts = _texts(1500)
    vectors = HashingEmbedder(DIMENSIONS).embed(texts)
    budget = RedisBudget(BUDGET_MS)
    recording = Recording(client)
    kind = vector_kind(INDEX)
    client.config_resetstat()
    with Pipes(recording, budget) as out:  # type: ignore[arg-type]
        for n, (text, vector) in enumerate(zip(texts, vectors, strict=True)):
            out.add(kind).hset(f"{INDEX}:chunk:{n}", mapping={"content": text, "embedding": vector})
            out.add(WRITE_KIND).set(f"{INDEX}:row:{n}", "1")  # not indexed: nearly free
    stats = client.info("commandstats")["cmdstat_hset"]
    redis_ms = float(stats["usec_per_call"]) / 1000  # Redis's own time per HSET, on average
    learned = budget.model.cost(kind)
    assert int(stats["calls"]) == len(texts)
    # The learned cost is what Redis takes (read from Redis's clock around each pipeline; on a
    # busy machine the average is pulled up by the rare HSET that waited for the CPU).
    assert redis_ms / 3 <= learned <= redis_ms * 3, (learned, redis_ms)
    # Once learned (the first pipelines assume 1 ms per vector), each pipeline holds Redis
    # about the budget by Redis's own measure (the costs move as the graph grows: give or take).
    settled = recording.sizes[len(recording.sizes) // 2 :]
    assert len(recording.sizes) > 20
    assert max(settled) * redis_ms <= 2.5 * BUDGET_MS, (max(settled), redis_ms)
    # ... and they are not needlessly short: the budget is used.
    assert sum(settled) / len(settled) * learned >= BUDGET_MS / 2, (settled, learned)
    client.close()

"""The Redis-time budget of the writers' pipelines (core.budget): what a pipeline may hold, and
how the costs follow what Redis took."""

from __future__ import annotations

from collections import Counter

import pytest

from connector.core.budget import (
    LEAST_IN_FLIGHT,
    MOST_IN_FLIGHT,
    VECTOR_PRIOR_MS,
    WRITE_KIND,
    CostModel,
    InFlight,
    ServiceClock,
    delete_kind,
    vector_kind,
)

VECTOR = vector_kind("documents")


def _learn(model: CostModel, counts: Counter[str], per_kind_ms: dict[str, float], n: int) -> None:
    """`n` pipelines of `counts`, each taking what its commands truly cost."""
    for _ in range(n):
        model.observe(counts, sum(per_kind_ms[k] * c for k, c in counts.items()))


def test_an_unseen_vector_costs_its_prior_and_a_pipeline_holds_what_the_budget_allows() -> None:
    model = CostModel(budget_ms=2.0)
    assert model.cost(VECTOR) == VECTOR_PRIOR_MS
    counts: Counter[str] = Counter()
    while model.fits(counts, VECTOR):
        counts[VECTOR] += 1
    assert counts[VECTOR] == 2  # 1 ms each until measured


def test_an_empty_pipeline_takes_a_command_costlier_than_the_budget() -> None:
    model = CostModel(budget_ms=0.5)
    assert model.fits(Counter(), VECTOR, 1)
    assert not model.fits(Counter({VECTOR: 1}), VECTOR, 1)


def test_the_cost_converges_to_what_redis_takes() -> None:
    model = CostModel(budget_ms=2.0)
    _learn(model, Counter({VECTOR: 4}), {VECTOR: 0.45}, 60)
    assert model.cost(VECTOR) == pytest.approx(0.45, rel=0.02)
    counts: Counter[str] = Counter()
    while model.fits(counts, VECTOR):
        counts[VECTOR] += 1
    assert counts[VECTOR] == 4  # 4 x 0.45 = 1.8 ms <= 2 ms < 5 x 0.45


def test_mixed_pipelines_teach_each_kind_its_own_cost() -> None:
    model = CostModel(budget_ms=2.0)
    truth = {VECTOR: 1.3, WRITE_KIND: 0.005, delete_kind("documents"): 0.25}
    for _ in range(200):
        _learn(model, Counter({VECTOR: 1, WRITE_KIND: 10}), truth, 1)
        _learn(model, Counter({WRITE_KIND: 40}), truth, 1)
        _learn(model, Counter({delete_kind("documents"): 6, WRITE_KIND: 6}), truth, 1)
    for kind, cost in truth.items():
        assert model.cost(kind) == pytest.approx(cost, rel=0.1), kind


def test_indexes_learn_apart() -> None:
    model = CostModel(budget_ms=2.0)
    wide = vector_kind("wide")
    _learn(model, Counter({VECTOR: 4}), {VECTOR: 0.4}, 50)
    _learn(model, Counter({wide: 1}), {wide: 1.6}, 50)
    assert model.cost(VECTOR) == pytest.approx(0.4, rel=0.05)
    assert model.cost(wide) == pytest.approx(1.6, rel=0.05)


def test_the_clock_counts_redis_time_once_for_pipelines_in_flight_together() -> None:
    clock = ServiceClock()
    # Two pipelines sent together; Redis serves the first for 2 ms, then the second for 2 ms.
    assert clock.served(10.000, 10.002) == pytest.approx(0.002)
    assert clock.served(10.000, 10.004) == pytest.approx(0.002)
    # One sent after a pause: its own time only.
    assert clock.served(10.010, 10.011) == pytest.approx(0.001)
    # Answered before the clock (out of order): no time, never negative.
    assert clock.served(10.005, 10.006) == 0.0


def test_a_local_link_keeps_two_pipelines_in_flight() -> None:
    flight = InFlight(budget_ms=2.0)
    assert flight.depth == LEAST_IN_FLIGHT  # nothing measured yet
    for n in range(100):
        flight.observe(answered_ms=2.0 + 0.3 + (n % 5), redis_ms=2.0)  # 0.3 ms outside at least
    assert flight.depth == 2


def test_a_distant_redis_gets_one_more_pipeline_per_budget_of_round_trip() -> None:
    flight = InFlight(budget_ms=2.0)
    for _ in range(40):
        flight.observe(answered_ms=2.0 + 10.0, redis_ms=2.0)  # 10 ms round trip
    assert flight.depth == 1 + 5
    for _ in range(40):
        flight.observe(answered_ms=2.0 + 2.5, redis_ms=2.0)  # the link got closer
    assert flight.depth == 1 + 2
    for _ in range(40):
        flight.observe(answered_ms=2000.0, redis_ms=2.0)
    assert flight.depth == MOST_IN_FLIGHT


def test_answers_a_busy_client_reads_late_do_not_deepen_the_window() -> None:
    """Pipelines queued in the client (or in Redis) come back late; the link's round trip is
    the least outside time, which they do not move."""
    flight = InFlight(budget_ms=2.0)
    for n in range(64):
        late = 30.0 if n % 4 else 0.0  # three answers in four read 30 ms late
        flight.observe(answered_ms=2.0 + 0.5 + late, redis_ms=2.0)
    assert flight.depth == 2

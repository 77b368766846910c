"""4. query latency: search() (k=10) without filter, with a tag filter, and hybrid (KNN + BM25
fused), over an index of 10k and 100k chunks, idle and while the connector ingests at full
speed; queries/s with 1 and 8 client threads.

The public search() is timed; inside it, the Searcher's embedder and Redis client are wrapped so
the same calls also give the embedding time, the number of round trips to Redis and their time
(waits behind other clients included: the Redis part), and what is left: Python. Every query
text is new, so the query-vector LRU never answers: each call embeds. The ingest load is a
separate process that UPDATEs the indexed rows' text, 1,000 rows per transaction, staying at
most 3 transactions ahead of the connector's checkpoint: the connector is always busy and the
index keeps its size."""

from __future__ import annotations

import itertools
import multiprocessing
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import psycopg
import redis

from bench.data import TextGen, short_rows
from bench.env import Scenario, Services, current_lsn, scenario
from bench.ingest import indexed
from bench.report import BenchResult, fmt
from bench.sizes import Sizes
from bench.stats import summary
from connector.core.lsn import Lsn
from connector.query import Searcher, search
from connector.sink.checkpoint import read_visible

P99_TARGET_MS = {"knn": 5.0, "tag filter": 3.0, "hybrid": 8.0}  # idle, 100k chunks
TARGET_CHUNKS = 100_000
VARIANTS: dict[str, dict[str, Any]] = {
    "knn": {},
    "tag filter": {"filters": {"source": "src3"}},
    "hybrid": {"hybrid": True},
}


class Timings(threading.local):
    embed = 0.0
    redis = 0.0  # the search's round trips to Redis, waits included
    trips = 0


def _timed(call: Callable[..., Any], timings: Timings) -> Callable[..., Any]:
    """`call` (one round trip to Redis), timed and counted in `timings`."""

    def timed(*args: Any, **options: Any) -> Any:
        started = time.perf_counter()
        try:
            return call(*args, **options)
        finally:
            timings.redis += time.perf_counter() - started
            timings.trips += 1

    return timed


def _time_round_trips(client: Any, timings: Timings) -> None:
    """Every round trip the Searcher's client makes (a command, a script, a pipeline), timed."""
    client.execute_command = _timed(client.execute_command, timings)
    pipeline = client.pipeline

    def timed_pipeline(*args: Any, **options: Any) -> Any:
        pipe = pipeline(*args, **options)
        pipe.execute = _timed(pipe.execute, timings)
        return pipe

    client.pipeline = timed_pipeline


class TimedEmbedder:
    """The Searcher's embedder, timing embed()."""

    def __init__(self, inner: Any, timings: Timings) -> None:
        self.inner = inner
        self.timings = timings
        self.provider = inner.provider
        self.model = inner.model
        self.dimensions = inner.dimensions

    @property
    def stats(self) -> Any:
        return self.inner.stats

    def embed(self, texts: Any) -> list[bytes]:
        started = time.perf_counter()
        vectors: list[bytes] = self.inner.embed(texts)
        self.timings.embed += time.perf_counter() - started
        return vectors

    def close(self) -> None:
        self.inner.close()


class QueryPool:
    """Unique query texts, handed out once each (thread-safe)."""

    def __init__(self, seed: int) -> None:
        self.gen = TextGen(seed)
        self.seen: set[str] = set()
        self.lock = threading.Lock()

    def next(self) -> str:
        with self.lock:
            while True:
                text = self.gen.query()
                if text not in self.seen:
                    self.seen.add(text)
                    return text


def _instrument(searcher: Searcher, timings: Timings) -> None:
    _time_round_trips(searcher.client, timings)
    embed_query = searcher.embed_query

    def timed(text: str, embedder: Any = None) -> bytes:
        """The question's vector through the searcher's own path (its LRU, its model), timed
        by the embedder it chose."""
        return embed_query(text, TimedEmbedder(embedder or searcher.embedder, timings))

    searcher.embed_query = timed  # type: ignore[method-assign]


def _latencies(
    scene: Scenario, pool: QueryPool, timings: Timings, options: Mapping[str, Any], n: int
) -> dict[str, Any]:
    total, embed, redis_s, trips, python = [], [], [], [], []
    errors = 0
    for _ in range(n):
        text = pool.next()
        timings.embed = timings.redis = 0.0
        timings.trips = 0
        started = time.perf_counter()
        try:
            search(text, k=10, settings=scene.settings, **options)
        except redis.RedisError:  # e.g. redis-py's 5 s socket timeout behind a long EXEC
            errors += 1
            continue
        total.append((time.perf_counter() - started) * 1000)
        embed.append(timings.embed * 1000)
        redis_s.append(timings.redis * 1000)
        trips.append(timings.trips)
        python.append(total[-1] - embed[-1] - redis_s[-1])
    return {
        "total": summary(total),
        "embed": summary(embed),
        "round_trips_ms": summary(redis_s),
        "round_trips": summary(trips),
        "python_ms": summary(python),
        "errors": errors,
    }


def _qps(scene: Scenario, pool: QueryPool, threads: int, seconds: float) -> float:
    counts = [0] * threads
    deadline = time.perf_counter() + seconds

    def work(slot: int) -> None:
        while time.perf_counter() < deadline:
            try:
                search(pool.next(), k=10, settings=scene.settings)
            except redis.RedisError:
                continue
            counts[slot] += 1

    started = time.perf_counter()
    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts) / (time.perf_counter() - started)


def _phase(scene: Scenario, pool: QueryPool, timings: Timings, sizes: Sizes, n: int) -> Any:
    latency = {name: _latencies(scene, pool, timings, opts, n) for name, opts in VARIANTS.items()}
    qps = {threads: _qps(scene, pool, threads, sizes.qps_seconds) for threads in (1, 8)}
    return {"latency": latency, "qps": qps}


def run_size(services: Services, sizes: Sizes, chunks: int) -> dict[str, Any]:
    rows = short_rows(chunks, seed=5)
    with scenario(services, sizes.dimensions[0]) as scene, indexed(scene, rows):
        timings = Timings()
        _instrument(scene.searcher(), timings)
        pool = QueryPool(chunks)
        _latencies(scene, pool, timings, {}, 50)  # warm up
        idle = _phase(scene, pool, timings, sizes, sizes.query_samples)
        with Ingest(scene, chunks) as ingest:
            busy = _phase(scene, pool, timings, sizes, sizes.query_samples // 2)
        busy["ingest_rows_s"] = ingest.rate
    return {"chunks": chunks, "idle": idle, "ingest": busy}


class Ingest:
    """The ingest load in its own process (so it does not share this process's GIL)."""

    def __init__(self, scene: Scenario, rows: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.stop = context.Event()
        self.count = context.Value("q", 0)
        self.process = context.Process(
            target=_ingest_worker,
            args=(scene.dsn, scene.redis_url, scene.slot, rows, self.stop, self.count),
            daemon=True,
        )
        self.rate = 0.0
        self._started = 0.0
        self._first = 0

    def __enter__(self) -> Ingest:
        self.process.start()
        deadline = time.perf_counter() + 60
        while self.count.value < 3000 and time.perf_counter() < deadline:  # running at speed
            time.sleep(0.05)
        self._started, self._first = time.perf_counter(), self.count.value
        return self

    def __exit__(self, *exc: object) -> None:
        self.rate = (self.count.value - self._first) / (time.perf_counter() - self._started)
        self.stop.set()
        self.process.join(30)
        if self.process.is_alive():
            self.process.kill()


def _ingest_worker(
    dsn: str, redis_url: str, slot: str, rows: int, stop: Any, count: Any, per_txn: int = 1000
) -> None:
    gen = TextGen(99)
    client = redis.Redis.from_url(redis_url)
    pending: deque[Lsn] = deque()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE upd (id bigint PRIMARY KEY, body text)")
        for start in itertools.cycle(range(1, rows + 1, per_txn)):
            if stop.is_set() or not _wait_applied(client, slot, pending, stop.is_set):
                return
            ids = range(start, min(start + per_txn, rows + 1))
            with conn.transaction(), conn.cursor() as cur:
                cur.execute("TRUNCATE upd")
                with cur.copy("COPY upd (id, body) FROM STDIN") as copy:
                    for i in ids:
                        copy.write_row((i, gen.paragraph(60)))
                cur.execute(
                    "UPDATE documents d SET body = u.body, updated_at = now() "
                    "FROM upd u WHERE d.id = u.id"
                )
            pending.append(current_lsn(conn))
            with count.get_lock():
                count.value += len(ids)


def _wait_applied(
    client: redis.Redis, slot: str, pending: deque[Lsn], stopped: Callable[[], bool]
) -> bool:
    """Block while 3 transactions are not yet applied; False when told to stop."""
    while len(pending) >= 3:
        if stopped():
            return False
        if read_visible(client, slot) >= pending[0]:
            pending.popleft()
        else:
            time.sleep(0.002)
    return True


def run(services: Services, sizes: Sizes) -> BenchResult:
    result = BenchResult("query")
    cases = []
    for chunks in sizes.query_chunks:
        case = run_size(services, sizes, chunks)
        cases.append(case)
        _figures(result, case)
        knn = case["idle"]["latency"]["knn"]["total"]
        print(f"  {chunks:,} chunks idle knn: p99 {fmt(knn['p99'], 'ms')}", flush=True)
    result.data["cases"] = cases
    return result


def _figures(result: BenchResult, case: dict[str, Any]) -> None:
    chunks = case["chunks"]
    for load_name in ("idle", "ingest"):
        phase = case[load_name]
        where = load_name
        if load_name == "ingest":
            where = f"under ingest ({phase['ingest_rows_s']:.0f} rows/s)"
        for variant, figures in phase["latency"].items():
            total, embed, ft = figures["total"], figures["embed"], figures["round_trips_ms"]
            trips, python = figures["round_trips"], figures["python_ms"]
            judged = load_name == "idle" and chunks == TARGET_CHUNKS
            failed = f"; {figures['errors']} FAILED" if figures["errors"] else ""
            result.add(
                f"search() {variant}, {chunks // 1000}k chunks, {where}: p99",
                total["p99"],
                "ms",
                ceilings=(
                    f"p50 {fmt(total['p50'])}, max {fmt(total['max'])}; "
                    f"{trips['mean']:.2f} round trips (max {trips['max']:.0f}), their time p50 "
                    f"{fmt(ft['p50'])} p99 {fmt(ft['p99'])}; embed p50 {fmt(embed['p50'])}; "
                    f"Python p50 {fmt(python['p50'])} ms{failed}"
                ),
                target=f"p99 <= {P99_TARGET_MS[variant]:.0f} ms" if judged else "",
                met=total["p99"] <= P99_TARGET_MS[variant] if judged else None,
            )
        qps = phase["qps"]
        result.add(
            f"search() knn queries/s, {chunks // 1000}k chunks, {where}: 1 thread",
            qps[1],
            "q/s",
            ceilings=f"8 threads: {fmt(qps[8])} q/s",
        )

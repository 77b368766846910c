"""10. reindex: an index of N one-chunk rows (full 100,000, quick 10,000; 384 d, embedded by an
OpenAI-compatible server on loopback, the embedding cache off) is rebuilt with another vector
type (FLOAT16) by `connector reindex`, next to the running daemon, while a thread searches
without pause. Measured in the same run: search() latency before (idle) and during the rebuild,
failed searches, embedding requests the rebuild sent (it keeps the model: its vectors come from
the old index), and how soon after the switch queries answer from the new index. Targets:
p99 during the rebuild <= 2x idle, zero failures, zero tokens, the switch visible within 10 ms."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any

from bench.data import TextGen, short_rows
from bench.env import REPO, Services, scenario, wait_streaming
from bench.ingest import load
from bench.report import BenchResult
from bench.sizes import Sizes
from bench.stats import percentile
from connector.sink.layout import read_record
from connector.testing.config import write_config
from connector.testing.openai_server import FakeOpenAI

DIMENSIONS = 384
QUERIES = 50  # distinct questions, embedded once (the searcher's cache) before the rebuild
IDLE_SEARCHES = 1000
P99_RATIO_TARGET = 2.0
SWITCH_TARGET_MS = 10.0


class _Searching(threading.Thread):
    """search() in a loop: (start, end, physical index or error) of each."""

    def __init__(self, scene: Any, queries: list[str]) -> None:
        super().__init__(daemon=True)
        self.scene, self.queries = scene, queries
        self.samples: list[tuple[float, float, str]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        found = self.scene.searcher()
        n = 0
        while not self.stop.is_set():
            started = time.time()
            try:
                hits = found.search(self.queries[n % len(self.queries)], k=10)
                answer = hits[0].index if hits else "empty"
            except Exception as exc:  # a failure is a measured outcome
                answer = f"error: {exc}"
            self.samples.append((started, time.time(), answer))
            n += 1


def run(services: Services, sizes: Sizes) -> BenchResult:
    result = BenchResult("reindex")
    count = 10_000 if sizes.quick else 100_000
    server = FakeOpenAI(DIMENSIONS).start()
    embedding: dict[str, object] = {
        "provider": "openai", "model": "text-embedding-3-small", "base_url": server.url,
        "api_key": "sk-bench-not-a-real-key", "cache": False,
    }  # fmt: skip
    gen = TextGen(21)
    queries = [gen.query() for _ in range(QUERIES)]
    try:
        with scenario(services, DIMENSIONS, embedding=embedding) as scene:
            with scene.connect() as conn:
                load(conn, short_rows(count, seed=21), per_txn=10_000)
            with scene.daemon() as daemon:
                wait_streaming(daemon, 3600)
                found = scene.searcher()
                for question in queries:  # embedded once: later searches send no request
                    found.search(question, k=10)
                idle = _idle(found, queries)
                tables = [{**t.model_dump(), "vector": {"type": "float16"}}
                          for t in scene.settings.tables]  # fmt: skip
                rebuilt = scene.settings.model_copy(
                    update={"tables": [type(scene.settings.tables[0])(**t) for t in tables]}
                )
                config = write_config(scene.workdir / "float16.toml", rebuilt)
                requests = len(server.embedding_inputs())
                searching = _Searching(scene, queries)
                searching.start()
                time.sleep(1.0)
                started = time.time()
                done = subprocess.run(
                    [sys.executable, "-m", "connector.cli", "reindex", "--config", str(config)],
                    capture_output=True, text=True, cwd=REPO, check=False,
                )  # fmt: skip
                finished = time.time()
                time.sleep(1.0)
                searching.stop.set()
                searching.join(30)
                if done.returncode != 0:
                    raise RuntimeError(f"connector reindex failed: {done.stdout}{done.stderr}")
                client = scene.redis()
                record = read_record(client, "documents")
                client.close()
                assert record is not None
                sent = len(server.embedding_inputs()) - requests
    finally:
        server.stop()
    data = _data(count, idle, searching.samples, started, finished, record.retired_at, sent)
    result.data = data
    _figures(result, data)
    return result


def _idle(found: Any, queries: list[str]) -> list[float]:
    latencies = []
    for n in range(IDLE_SEARCHES):
        began = time.perf_counter()
        found.search(queries[n % len(queries)], k=10)
        latencies.append(time.perf_counter() - began)
    return latencies


def _data(
    count: int,
    idle: list[float],
    samples: list[tuple[float, float, str]],
    started: float,
    finished: float,
    switched: float,
    sent: int,
) -> dict[str, Any]:
    during = [end - begin for begin, end, _ in samples if started <= begin <= switched]
    failures = [answer for _b, _e, answer in samples if answer.startswith(("error", "empty"))]
    after = [(begin, end, answer) for begin, end, answer in samples if end >= switched]
    first_new = next((end for _b, end, answer in after if answer == "documents.v2"), None)
    stale = sum(1 for begin, _e, answer in after if begin > switched and answer != "documents.v2")
    return {
        "chunks": count,
        "rebuild_s": finished - started,
        "idle_p99_ms": 1000 * percentile(idle, 99),
        "during_p99_ms": 1000 * percentile(during, 99) if during else float("nan"),
        "during_searches": len(during),
        "failures": len(failures),
        "failure_examples": failures[:3],
        "embedding_requests": sent,
        "switch_visible_ms": 1000 * (first_new - switched) if first_new else float("nan"),
        "old_answers_after_switch": stale,
    }


def _figures(result: BenchResult, data: dict[str, Any]) -> None:
    ratio = data["during_p99_ms"] / data["idle_p99_ms"] if data["idle_p99_ms"] else 0.0
    result.add(
        f"search() p99 during a rebuild of {data['chunks']:,} chunks (FLOAT32 -> FLOAT16)",
        data["during_p99_ms"],
        "ms",
        ceilings=(
            f"idle {data['idle_p99_ms']:.1f} ms; {data['during_searches']:,} searches, "
            f"rebuild {data['rebuild_s']:.0f} s"
        ),
        ratio=ratio,
        target=f"<= {P99_RATIO_TARGET:.0f}x idle",
        met=ratio <= P99_RATIO_TARGET,
    )
    result.add("  failed searches", data["failures"], "", target="0", met=data["failures"] == 0)
    result.add(
        "  embedding requests of the rebuild (same model)",
        data["embedding_requests"],
        "",
        target="0",
        met=data["embedding_requests"] == 0,
    )
    result.add(
        "  switch -> first answer from the new index",
        data["switch_visible_ms"],
        "ms",
        ceilings=f"{data['old_answers_after_switch']} searches begun after it answered old",
        target=f"<= {SWITCH_TARGET_MS:.0f} ms",
        met=data["switch_visible_ms"] <= SWITCH_TARGET_MS and data["old_answers_after_switch"] == 0,
    )

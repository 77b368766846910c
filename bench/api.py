"""11. api: `POST /v1/search` of `connector serve` (one uvicorn process on loopback) at N
one-chunk rows (full 100,000, quick 10,000; hashing, 384 d), 16 concurrent clients with
keep-alive connections, next to `Searcher.search()` called from 16 threads in the benchmark's
own process, same questions, same run (the ceiling). Targets: throughput >= 0.7 of the
ceiling, p99 <= 10 ms. Also the server's CPU time per request next to the in-process search's
(what the HTTP stack adds, whatever else the machine runs)."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.data import TextGen, short_rows
from bench.env import REPO, Services, scenario, wait_streaming
from bench.ingest import load
from bench.report import BenchResult
from bench.sizes import Sizes
from bench.stats import cpu_seconds, percentile
from connector.testing.config import write_config
from connector.testing.daemon import child_environment
from connector.testing.services import free_port

CLIENTS = 16
QUERIES = 200
THROUGHPUT_TARGET = 0.7
P99_TARGET_MS = 10.0


def _hammer(call: Callable[[int], None], seconds: float) -> tuple[float, list[float]]:
    """`call` from CLIENTS threads for `seconds`: calls per second, and each call's latency."""
    latencies: list[list[float]] = [[] for _ in range(CLIENTS)]
    stop = time.perf_counter() + seconds

    def client(n: int) -> None:
        i = n
        while time.perf_counter() < stop:
            began = time.perf_counter()
            call(i)
            latencies[n].append(time.perf_counter() - began)
            i += CLIENTS

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [x for each in latencies for x in each]
    return len(every) / (time.perf_counter() - started), every


def _ignore(_value: object) -> None:
    pass


def run(services: Services, sizes: Sizes) -> BenchResult:
    result = BenchResult("api")
    count = 10_000 if sizes.quick else 100_000
    seconds = 5.0 if sizes.quick else 10.0
    gen = TextGen(31)
    queries = [gen.query() for _ in range(QUERIES)]
    with scenario(services, 384) as scene:
        with scene.connect() as conn:
            load(conn, short_rows(count, seed=31), per_txn=10_000)
        with scene.daemon() as daemon:
            wait_streaming(daemon, 3600)
        found = scene.searcher()
        for question in queries:
            found.search(question, k=10)
        cpu = time.process_time()
        direct = _hammer(lambda i: _ignore(found.search(queries[i % QUERIES], k=10)), seconds)
        search_cpu_ms = 1000 * (time.process_time() - cpu) / len(direct[1])
        port = free_port()
        served = scene.settings.model_copy(
            update={"serve": scene.settings.serve.model_copy(update={"port": port})}
        )
        config = write_config(scene.workdir / "serve.toml", served)
        api_over_http, server_cpu_ms = _serve_and_hammer(
            config, scene.workdir / "serve.log", port, queries, seconds
        )
    data = {
        "chunks": count,
        "clients": CLIENTS,
        "searcher_qps": direct[0],
        "searcher_p99_ms": 1000 * percentile(direct[1], 99),
        "api_qps": api_over_http[0],
        "api_p50_ms": 1000 * percentile(api_over_http[1], 50),
        "api_p99_ms": 1000 * percentile(api_over_http[1], 99),
        "searcher_cpu_ms": search_cpu_ms,
        "server_cpu_ms": server_cpu_ms,
    }
    result.data = data
    ratio = data["api_qps"] / data["searcher_qps"]
    result.add(
        f"POST /v1/search, {count:,} chunks, {CLIENTS} clients",
        data["api_qps"],
        "q/s",
        ceilings=(
            f"Searcher.search() from {CLIENTS} threads {data['searcher_qps']:.0f} q/s "
            f"(p99 {data['searcher_p99_ms']:.1f} ms)"
        ),
        ratio=ratio,
        target=f">= {THROUGHPUT_TARGET}",
        met=ratio >= THROUGHPUT_TARGET,
    )
    result.add(
        "  /v1/search p99",
        data["api_p99_ms"],
        "ms",
        ceilings=f"p50 {data['api_p50_ms']:.1f} ms",
        target=f"<= {P99_TARGET_MS:.0f} ms",
        met=data["api_p99_ms"] <= P99_TARGET_MS,
    )
    # CPU per request: what the server adds to a search, robust to a busy machine's scheduling.
    result.add(
        "  connector serve's CPU per request",
        data["server_cpu_ms"],
        "ms",
        ceilings=f"Searcher.search() in-process: {data['searcher_cpu_ms']:.2f} ms per search",
        ratio=data["server_cpu_ms"] / data["searcher_cpu_ms"],
    )
    return result


def _serve_and_hammer(
    config: Path, log: Path, port: int, queries: list[str], seconds: float
) -> tuple[tuple[float, list[float]], float]:
    """`connector serve` in a process of its own, and CLIENTS clients calling it: (calls per
    second, latencies) and the server's CPU milliseconds per call."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "connector.cli", "serve", "--config", str(config)],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=child_environment(),
        )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("connector serve did not get ready: " + log.read_text()[-3000:])
            time.sleep(0.1)
        # Plain keep-alive connections (http.client): the clients' own Python work stays small
        # next to the server's on two cores.
        clients = [
            http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(CLIENTS)
        ]
        bodies = [json.dumps({"text": q, "k": 10}).encode() for q in queries]
        headers = {"Content-Type": "application/json"}

        def call(i: int) -> None:
            client = clients[i % CLIENTS]
            client.request("POST", "/v1/search", bodies[i % QUERIES], headers)
            response = client.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"/v1/search answered {response.status}")

        for n in range(QUERIES):  # the server's query cache, as the Searcher's above
            call(n * CLIENTS)
        try:
            cpu = cpu_seconds(process.pid)
            hammered = _hammer(call, seconds)
            return hammered, 1000 * (cpu_seconds(process.pid) - cpu) / len(hammered[1])
        finally:
            for client in clients:
                client.close()
    finally:
        process.terminate()
        process.wait(30)

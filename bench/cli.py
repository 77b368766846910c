"""`python -m bench`: start the services, run the benchmarks, print the table, write
results.json and bench.png."""

from __future__ import annotations

import argparse
import datetime
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (
    api,
    contention,
    embedding,
    freshness,
    ingest,
    large,
    memory,
    quality,
    queries,
    reindex,
    resources,
    served,
    snapshot,
    vectors,
)
from bench.env import Services, machine_info, quiet_logs, start_services
from bench.report import BenchResult, result_payload, table, write_json
from bench.sizes import Sizes

Benchmark = Callable[[Services, Sizes], BenchResult]
BENCHMARKS: dict[str, Benchmark] = {
    "ingest": ingest.run,
    "snapshot": snapshot.run,
    "freshness": freshness.run,
    "query": queries.run,
    "quality": quality.run,
    "resources": resources.run,
    "embedding": embedding.run,
    "served": served.run,
    "large": large.run,
    "vectors": vectors.run,
    "reindex": reindex.run,
    "api": api.run,
    "memory": memory.run,
    "contention": contention.run,
}
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmarks of the connector (see bench/README.md)."
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke check")
    parser.add_argument(
        "--only", choices=list(BENCHMARKS), action="append", help="run this benchmark (repeatable)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where JSON and PNG go")
    return parser.parse_args(argv)


def _print_machine(machine: dict[str, Any]) -> None:
    print("machine")
    print(f"  cpu         {machine['cpu']} x {machine['cores']} cores, {machine['ram_gb']} GB RAM")
    print(f"  python      {machine['python']} (kernel {machine['kernel']})")
    print(f"  postgresql  {machine['postgresql']} (fsync off, wal2json)")
    print(f"  redis       {machine['redis']}, RediSearch {machine['redisearch']} (AOF everysec)")
    print(f"  load avg    {' '.join(str(x) for x in machine['load_avg_at_start'])} at start")
    print(flush=True)


def _run_one(name: str, services: Services, sizes: Sizes) -> BenchResult:
    print(f"[{name}]", flush=True)
    started = time.perf_counter()
    try:
        result = BENCHMARKS[name](services, sizes)
    except Exception as exc:  # one failing benchmark does not stop the others
        traceback.print_exc()
        result = BenchResult(name, error=f"{type(exc).__name__}: {exc}")
    result.seconds = time.perf_counter() - started
    if result.figures:
        print(table(result.figures))
    print(f"  ({result.seconds:.0f} s)\n", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_logs()
    sizes = Sizes.small() if args.quick else Sizes.full()
    names = args.only or list(BENCHMARKS)
    started = time.perf_counter()
    services = start_services()
    results: dict[str, BenchResult] = {}
    try:
        machine = machine_info(services)
        _print_machine(machine)
        for name in names:
            results[name] = _run_one(name, services, sizes)
    finally:
        services.stop()
    total = time.perf_counter() - started
    figures = [figure for result in results.values() for figure in result.figures]
    mode = "quick" if args.quick else "full"
    print(f"=== all benchmarks ({mode} run, {total / 60:.1f} min) ===")
    print(table(figures))
    for result in results.values():
        if result.error:
            print(f"FAILED {result.name}: {result.error}")
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python -m bench" + (" --quick" if args.quick else ""),
        "mode": mode,
        "seconds": round(total, 1),
        "machine": machine,
        "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
        "sizes": sizes.__dict__,
        "benchmarks": {name: result_payload(result) for name, result in results.items()},
    }
    write_json(args.out / "results.json", payload)
    from bench.plot import plot

    plot(results, args.out / "bench.png", f"{machine['cpu']} x {machine['cores']}, {mode} run")
    print(f"\nwrote {args.out / 'results.json'} and {args.out / 'bench.png'}")
    return 1 if any(result.error for result in results.values()) else 0

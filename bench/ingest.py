"""1. ingest: rows inserted (COPY, 1,000 rows per transaction) while the connector streams; the
time from the first commit until all of them are searchable, next to pg_recvlogical reading the
same changes and one pipelined redis-py client writing the same chunks."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import redis

from bench import ceilings
from bench.data import COPY_COLUMNS, Row, batches, copy_buffer, long_rows, row_chunks, short_rows
from bench.env import (
    TABLE,
    Scenario,
    Services,
    cleanup_client,
    current_lsn,
    flush_redis,
    num_docs,
    scenario,
    wait_streaming,
)
from bench.report import BenchResult, fmt
from bench.sizes import Sizes
from connector.testing.daemon import DaemonProcess

TARGET = 0.95  # of Redis's own pipelined HSET + HNSW rate on the same chunks


def load(conn: psycopg.Connection[Any], rows: Sequence[Row], per_txn: int = 1000) -> float:
    """COPY `rows` in transactions of `per_txn`; returns when the first one committed."""
    first = 0.0
    buffers = [copy_buffer(batch) for batch in batches(rows, per_txn)]
    for buffer in buffers:
        with (
            conn.transaction(),
            conn.cursor() as cur,
            cur.copy(f"COPY documents {COPY_COLUMNS} FROM STDIN") as copy,
        ):
            copy.write(buffer)
        first = first or time.perf_counter()
    return first


@contextlib.contextmanager
def indexed(scene: Scenario, rows: Sequence[Row]) -> Iterator[DaemonProcess]:
    """The scenario's daemon, streaming, after its first copy of `rows` (single-chunk rows,
    loaded 10,000 per transaction) made one chunk each."""
    with scene.connect() as conn:
        load(conn, rows, per_txn=10_000)
    with scene.daemon() as daemon:
        wait_streaming(daemon)
        with contextlib.closing(scene.redis()) as client:
            chunks = num_docs(client)
        if chunks != len(rows):
            raise RuntimeError(f"the index holds {chunks} chunks, not {len(rows)}")
        yield daemon


def run_case(services: Services, dims: int, rows: list[Row]) -> dict[str, Any]:
    with scenario(services, dims) as scene:
        chunks = row_chunks(scene.settings, rows)
        mappings = ceilings.prepare_chunks(scene.settings, rows, chunks)
        logical = ceilings.Recvlogical(scene.dsn, f"{scene.slot}_ceiling")
        logical.create()
        seconds, lsn, blocked = _connector_run(scene, rows, len(mappings))
        read_s, read_rows = logical.read(lsn, scene.workdir / "recvlogical.json", [TABLE])
        logical.drop()
        if read_rows != len(rows):
            raise RuntimeError(f"pg_recvlogical read {read_rows} row changes, not {len(rows)}")
        with contextlib.closing(cleanup_client(scene.redis_url)) as client:
            flush_redis(client)
        redis_s = ceilings.redis_write(scene.redis_url, scene.settings, mappings)
    return {
        "dimensions": dims,
        "rows": len(rows),
        "chunks": len(mappings),
        "connector_s": seconds,
        "connector_rows_s": len(rows) / seconds,
        "recvlogical_rows_s": len(rows) / read_s,
        "redis_rows_s": len(rows) / redis_s,
        "redis_chunks_s": len(mappings) / redis_s,
        "redis_per_batch": blocked,
    }


def _connector_run(
    scene: Scenario, rows: list[Row], chunks: int
) -> tuple[float, Any, dict[str, float]]:
    client = scene.redis()
    with scene.daemon() as daemon:
        wait_streaming(daemon)
        client.config_resetstat()
        with scene.connect() as conn:
            first_commit = load(conn, rows)
            lsn = current_lsn(conn)
        scene.wait_searchable(lsn)
        seconds = time.perf_counter() - first_commit
        blocked = redis_blocking(client)
        indexed = num_docs(client)
    client.close()
    restarts = daemon.lines("reconnecting in")
    blocked["restarts"] = len(restarts)
    for line in restarts[:3]:
        print(f"  connector restarted: {line[:160]}", flush=True)
    if indexed != chunks:
        raise RuntimeError(f"the index holds {indexed} chunks, not {chunks}")
    return seconds, lsn, blocked


def redis_blocking(client: redis.Redis) -> dict[str, float]:
    """How long the connector's commands held Redis's one thread (INFO commandstats since the
    last CONFIG RESETSTAT): a query waits behind at most one of them. Staging sends HSETs (an
    HNSW insertion each) in small pipelines and no MULTI/EXEC at all."""
    stats = client.info("commandstats")
    found: dict[str, float] = {}
    for name in ("exec", "hset"):
        entry = stats.get(f"cmdstat_{name}", {})
        found[f"{name}_calls"] = float(entry.get("calls", 0))
        found[f"{name}_avg_ms"] = float(entry.get("usec_per_call", 0.0)) / 1000
    return found


def run(services: Services, sizes: Sizes) -> BenchResult:
    result = BenchResult("ingest")
    cases = []
    for label, make, count in (
        ("1 chunk/row", short_rows, sizes.ingest_rows),
        ("~1k tokens/row", long_rows, sizes.ingest_long_rows),
    ):
        rows = make(count)
        for dims in sizes.dimensions:
            case = run_case(services, dims, rows)
            case["case"] = label
            cases.append(case)
            _figure(result, case)
            print(f"  {label} {dims}d: {fmt(case['connector_rows_s'], 'rows/s')}", flush=True)
    result.data["cases"] = cases
    return result


def _figure(result: BenchResult, case: dict[str, Any]) -> None:
    ratio = case["connector_rows_s"] / case["redis_rows_s"]
    chunks_per_row = case["chunks"] / case["rows"]
    result.add(
        f"{case['case']} ({chunks_per_row:.1f} chunks), {case['dimensions']}d, "
        f"{case['rows']:,} rows",
        case["connector_rows_s"],
        "rows/s",
        ceilings=(
            f"recvlogical {fmt(case['recvlogical_rows_s'])}, "
            f"redis {fmt(case['redis_rows_s'])} rows/s"
        ),
        ratio=ratio,
        target=f">= {TARGET:.2f} x redis",
        met=ratio >= TARGET,
    )
    blocked = case["redis_per_batch"]
    result.add(
        f"  Redis held per command: HSET avg ({blocked['hset_calls']:.0f} calls)",
        blocked["hset_avg_ms"],
        "ms",
        ceilings=f"MULTI/EXEC {blocked['exec_calls']:.0f} calls"
        + (f"; connector restarted {blocked['restarts']}x" if blocked["restarts"] else ""),
    )

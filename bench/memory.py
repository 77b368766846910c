"""11. the daemon's memory against the size of a transaction and of a row (`--only memory`).

The real daemon (`connector run`, a subprocess) is measured by its peak RSS (`VmHWM`, set back
to the current RSS before each phase through /proc/PID/clear_refs, connector.testing.memcap):

- one `UPDATE` of the first N rows of a table in one transaction, for growing N (full: 10,000,
  100,000 and 1,000,000; quick: 10,000 and 50,000; CONNECTOR_BENCH_MEMORY_ROWS=5000000 for
  more), from its commit until all of it is searchable: peak RSS and rows/s. Target: peak RSS
  <= 300 MB whatever N;
- one `INSERT` of a single-paragraph row of 1, 10 and 50 MB (quick: 1 and 10), then a small
  row: peak RSS until both are searchable (the big one cut at `max_content_tokens`).

The table's rows are one chunk each and its index is FLAT at the benchmark's first dimension
count (an HNSW insertion per row would make Redis, not the daemon, the measure); the hashing
embedder. The curve is in README's Performance section.
"""

from __future__ import annotations

import os
import time
from typing import Any

from bench.env import Scenario, Services, current_lsn, scenario, wait_streaming
from bench.report import BenchResult
from bench.sizes import Sizes
from connector.testing.config import settings_for
from connector.testing.daemon import DaemonProcess
from connector.testing.memcap import CappedDaemon

RSS_TARGET_MB = 300.0
_WATCH_CAP_MB = 4096  # a cgroup far above the figures: measured, not enforced
_FILL = (
    "INSERT INTO documents (id, title, body, source) SELECT g, 'row ' || g, "
    "'the body of row ' || g || ' ' || md5(g::text), 'web' FROM generate_series(1, %s) AS g"
)


def run(services: Services, sizes: Sizes) -> BenchResult:
    result = BenchResult("memory")
    extra = int(os.environ.get("CONNECTOR_BENCH_MEMORY_ROWS", "0"))
    counts = [10_000, 50_000] if sizes.quick else [10_000, 100_000, 1_000_000]
    if extra:
        counts.append(extra)
    megabytes = [1, 10] if sizes.quick else [1, 10, 50]
    with scenario(services, sizes.dimensions[0]) as scene:
        scene.settings = _flat(scene)
        transactions = _transactions(scene, counts)
    with scenario(services, sizes.dimensions[0]) as scene:
        scene.settings = _flat(scene)
        rows = _rows(scene, megabytes)
    result.data = {"transactions": transactions, "rows": rows}
    for item in transactions:
        result.add(
            f"one UPDATE of {item['rows']:,} rows: peak RSS",
            item["peak_mb"],
            "MB",
            ceilings=f"{item['rows_s']:,.0f} rows/s; RSS {item['before_mb']:.0f} MB before",
            target=f"<= {RSS_TARGET_MB:.0f} MB",
            met=item["peak_mb"] <= RSS_TARGET_MB,
        )
    for item in rows:
        result.add(
            f"one row of {item['mb']} MB: peak RSS",
            item["peak_mb"],
            "MB",
            ceilings=f"RSS {item['before_mb']:.0f} MB before; {item['seconds']:.1f} s",
        )
    return result


def _flat(scene: Scenario) -> Any:
    settings = scene.settings
    table = settings.tables[0].model_dump()
    table["vector"] = {"algorithm": "flat"}
    return settings_for(
        settings.postgres.dsn.get_secret_value(),
        scene.redis_url,
        [table],
        postgres={"slot": scene.slot},
        embedding={"dimensions": settings.embedding.dimensions},
        observability={"log_level": "INFO"},
    )


def _capped(scene: Scenario) -> CappedDaemon:
    daemon = DaemonProcess.for_settings(scene.settings, scene.workdir, "memory")
    return CappedDaemon(daemon, _WATCH_CAP_MB)


def _transactions(scene: Scenario, counts: list[int]) -> list[dict[str, Any]]:
    with scene.connect() as conn:
        conn.execute(_FILL, [max(counts)])
    out = []
    with _capped(scene) as running:
        wait_streaming(running.daemon, timeout_s=7200)
        for n in counts:
            before = running.cap.rss_mb()
            running.cap.reset_peak()
            with scene.connect() as conn:
                conn.execute("UPDATE documents SET body = body || ' +' WHERE id <= %s", [n])
                committed = time.perf_counter()
                lsn = current_lsn(conn)
            scene.wait_searchable(lsn, timeout_s=7200)
            seconds = time.perf_counter() - committed
            time.sleep(2.0)  # its garbage collection starts
            peak = running.cap.peak_mb()
            running.assert_healthy(f"after the UPDATE of {n} rows")
            out.append(
                {"rows": n, "seconds": seconds, "rows_s": n / seconds, "peak_mb": peak,
                 "before_mb": before}
            )  # fmt: skip
            print(f"  UPDATE of {n:,} rows: peak RSS {peak:.1f} MB, {n / seconds:,.0f} rows/s",
                  flush=True)  # fmt: skip
    return out


def _rows(scene: Scenario, megabytes: list[int]) -> list[dict[str, Any]]:
    out = []
    with _capped(scene) as running:
        wait_streaming(running.daemon, timeout_s=600)
        for n, mb in enumerate(megabytes, 1):
            before = running.cap.rss_mb()
            running.cap.reset_peak()
            repeats = mb * (1 << 20) // 27
            with scene.connect() as conn:
                conn.execute(
                    "INSERT INTO documents (id, title, body) VALUES "
                    "(%s, 'big', repeat('lorem ipsum dolor sit amet ', %s))",
                    [n * 2, repeats],
                )
                conn.execute(
                    "INSERT INTO documents (id, title, body) VALUES (%s, 'small', 'after')",
                    [n * 2 + 1],
                )
                started = time.perf_counter()
                lsn = current_lsn(conn)
            scene.wait_searchable(lsn, timeout_s=600)
            seconds = time.perf_counter() - started
            peak = running.cap.peak_mb()
            running.assert_healthy(f"after the row of {mb} MB")
            out.append({"mb": mb, "peak_mb": peak, "before_mb": before, "seconds": seconds})
            print(f"  row of {mb} MB: peak RSS {peak:.1f} MB", flush=True)
    return out

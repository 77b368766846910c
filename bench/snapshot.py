"""2. snapshot: N rows already in the table; the connector's first start copies them from the
slot's exported snapshot. Measured from the slot's creation until the checkpoint (written once
the whole copy is in Redis) appears, next to a plain COPY TO STDOUT of the table and one
pipelined redis-py client writing the same chunks."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from bench import ceilings
from bench.data import short_rows
from bench.env import Services, cleanup_client, flush_redis, num_docs, scenario, wait_streaming
from bench.ingest import load
from bench.report import BenchResult, fmt
from bench.sizes import Sizes
from connector.source.slots import slot_info
from connector.testing.daemon import DaemonProcess


def run(services: Services, sizes: Sizes) -> BenchResult:
    result = BenchResult("snapshot")
    rows = short_rows(sizes.snapshot_rows, seed=3)
    dims = sizes.dimensions[0]
    with scenario(services, dims) as scene:
        chunks = ceilings.prepare_chunks(
            scene.settings, rows, [[row.text] for row in rows]
        )  # one chunk each (checked below against the index)
        with scene.connect() as conn:
            load(conn, rows, per_txn=10_000)
            conn.execute("VACUUM ANALYZE documents")
        daemon = scene.daemon().start()
        try:
            slot_at = _wait_slot(scene, daemon)
            done_at = wait_streaming(daemon)
        finally:
            daemon.stop()
        client = scene.redis()
        indexed = num_docs(client)
        if indexed != len(rows):
            raise RuntimeError(f"the index holds {indexed} chunks, not {len(rows)}")
        client.close()
        with contextlib.closing(cleanup_client(scene.redis_url)) as cleaner:
            flush_redis(cleaner)
        copy_s, copied = ceilings.copy_out(scene.dsn)
        redis_s = ceilings.redis_write(scene.redis_url, scene.settings, chunks)
    data: dict[str, Any] = {
        "rows": len(rows),
        "dimensions": dims,
        "startup_s": slot_at - daemon.started_at,
        "copy_s": done_at - slot_at,
        "connector_rows_s": len(rows) / (done_at - slot_at),
        "copy_out_rows_s": copied / copy_s,
        "redis_rows_s": len(rows) / redis_s,
    }
    result.data = data
    lower = min(data["copy_out_rows_s"], data["redis_rows_s"])
    ratio = data["connector_rows_s"] / lower
    result.add(
        f"initial copy, {dims}d, {len(rows):,} rows",
        data["connector_rows_s"],
        "rows/s",
        ceilings=(
            f"COPY out {fmt(data['copy_out_rows_s'])}, redis {fmt(data['redis_rows_s'])} rows/s"
        ),
        ratio=ratio,
    )
    result.add("process start until slot created", data["startup_s"], "s")
    return result


def _wait_slot(scene: Any, daemon: DaemonProcess) -> float:
    with scene.connect() as conn:
        daemon.wait_until(
            lambda: slot_info(conn, scene.slot) is not None, 120, "it created a slot", 0.005
        )
    return time.perf_counter()

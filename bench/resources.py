"""5. memory and CPU of the daemon (`python -m connector.cli run`, a subprocess): peak and
steady-state RSS (/proc/PID/status VmHWM, VmRSS) and CPU seconds (utime + stime of
/proc/PID/stat) per 1,000 changes for an initial copy, inserts, updates and deletes. The
redis-server and the walsender (the Postgres process decoding the slot) are measured over the
same phases, for scale."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.data import short_rows
from bench.env import Scenario, Services, current_lsn, scenario, wait_streaming, walsender_pid
from bench.ingest import load
from bench.report import BenchResult, fmt
from bench.sizes import Sizes
from bench.stats import Sampler, cpu_seconds, memory_kb
from connector.testing.daemon import DaemonProcess

RSS_TARGET_MB = 200.0
IDLE_SECONDS = 5.0
_UPDATE = (
    "UPDATE documents SET body = body || ' edited', updated_at = now() WHERE id BETWEEN %s AND %s"
)
_DELETE = "DELETE FROM documents WHERE id BETWEEN %s AND %s"


class Meter:
    """CPU seconds of the connector, redis-server and the walsender between two points."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid}
        self.phases: list[dict[str, Any]] = []

    def phase(self, name: str, changes: int, action: Callable[[], None]) -> None:
        before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        started = time.perf_counter()
        action()
        seconds = time.perf_counter() - started
        cpu = {name: cpu_seconds(pid) - before[name] for name, pid in self.pids.items()}
        per_k = {name: value / changes * 1000 for name, value in cpu.items()}
        self.phases.append(
            {
                "phase": name,
                "changes": changes,
                "seconds": seconds,
                "cpu_s": cpu,
                "cpu_s_per_1k": per_k,
            }
        )
        print(f"  {name}: {fmt(per_k['connector'], 'CPU s')} per 1k changes", flush=True)


def _batched(scene: Scenario, statement: str, first: int, last: int, per_txn: int = 1000) -> None:
    with scene.connect() as conn:
        for start in range(first, last + 1, per_txn):
            conn.execute(statement, [start, min(start + per_txn - 1, last)])
        lsn = current_lsn(conn)
    scene.wait_searchable(lsn)


def _insert(scene: Scenario, first: int, count: int) -> Callable[[], None]:
    def action() -> None:
        with scene.connect() as conn:
            load(conn, short_rows(count, seed=22, first_id=first))
            lsn = current_lsn(conn)
        scene.wait_searchable(lsn)

    return action


def _started(daemon: DaemonProcess) -> None:
    wait_streaming(daemon)


def run(services: Services, sizes: Sizes) -> BenchResult:
    result = BenchResult("resources")
    inserts = sizes.resource_rows
    initial = edits = inserts // 5
    with scenario(services, sizes.dimensions[0]) as scene:
        with scene.connect() as conn:
            load(conn, short_rows(initial, seed=21), per_txn=10_000)
        daemon = scene.daemon().start()
        sampler = Sampler(daemon.pid).start()
        try:
            meter = Meter({"connector": daemon.pid})
            meter.phase("startup + initial copy", initial, lambda: _started(daemon))
            with scene.connect() as conn:
                walsender = walsender_pid(conn, scene.slot)
            meter.pids.update({"redis": services.redis_pid() or 0, "walsender": walsender or 0})
            meter.phase("insert", inserts, _insert(scene, initial + 1, inserts))
            meter.phase("update", edits, lambda: _batched(scene, _UPDATE, 1, edits))
            meter.phase("delete", edits, lambda: _batched(scene, _DELETE, edits + 1, 2 * edits))
            idle_cpu = cpu_seconds(daemon.pid)
            time.sleep(IDLE_SECONDS)
            idle_cpu = cpu_seconds(daemon.pid) - idle_cpu
            memory = memory_kb(daemon.pid)
        finally:
            sampler.stop()
            daemon.stop()
    data = {
        "phases": meter.phases,
        "peak_rss_mb": memory.get("VmHWM", 0) / 1024,
        "steady_rss_mb": memory.get("VmRSS", 0) / 1024,
        "idle_cpu_percent": idle_cpu / IDLE_SECONDS * 100,
        "samples": {"t": sampler.times, "rss_mb": sampler.rss_mb, "cpu_s": sampler.cpu_s},
    }
    result.data = data
    _figures(result, data)
    return result


def _figures(result: BenchResult, data: dict[str, Any]) -> None:
    result.add(
        f"connector RSS at steady state (after {IDLE_SECONDS:.0f} s idle)",
        data["steady_rss_mb"],
        "MB",
        ceilings=f"peak (VmHWM) {fmt(data['peak_rss_mb'])} MB",
        target=f"<= {RSS_TARGET_MB:.0f} MB",
        met=data["steady_rss_mb"] <= RSS_TARGET_MB,
    )
    for phase in data["phases"]:
        per_k = phase["cpu_s_per_1k"]
        others = ", ".join(
            f"{name} {fmt(per_k[name])}" for name in ("redis", "walsender") if name in per_k
        )
        rate = phase["changes"] / phase["seconds"]
        result.add(
            f"connector CPU / 1k changes, {phase['phase']} ({phase['changes']:,} @ {rate:,.0f}/s)",
            per_k["connector"],
            "CPU s",
            ceilings=others + " CPU s" if others else "",
        )
    result.add("connector CPU when idle", data["idle_cpu_percent"], "% of a core")

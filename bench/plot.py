"""bench.png: one panel per benchmark that ran (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from bench.report import BenchResult


def _bars(ax: Axes, labels: list[str], series: dict[str, list[float]], log: bool = False) -> None:
    width = 0.8 / max(len(series), 1)
    for n, (name, values) in enumerate(series.items()):
        positions = [i + (n - (len(series) - 1) / 2) * width for i in range(len(labels))]
        ax.bar(positions, values, width, label=name)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def _ingest(ax: Axes, data: dict[str, Any]) -> None:
    cases = data["cases"]
    labels = [f"{c['case']}\n{c['dimensions']}d" for c in cases]
    _bars(
        ax,
        labels,
        {
            "connector": [c["connector_rows_s"] for c in cases],
            "pg_recvlogical": [c["recvlogical_rows_s"] for c in cases],
            "redis pipelined": [c["redis_rows_s"] for c in cases],
        },
        log=True,
    )
    ax.set_title("ingest: rows/s vs ceilings (log)")


def _snapshot(ax: Axes, data: dict[str, Any]) -> None:
    _bars(
        ax,
        [f"{data['rows']:,} rows, {data['dimensions']}d"],
        {
            "connector copy": [data["connector_rows_s"]],
            "COPY TO STDOUT": [data["copy_out_rows_s"]],
            "redis pipelined": [data["redis_rows_s"]],
        },
        log=True,
    )
    ax.set_title("snapshot: rows/s vs ceilings (log)")


def _cdf(ax: Axes, values: list[float], label: str) -> None:
    ordered = sorted(values)
    n = len(ordered)
    ax.plot(ordered, [(i + 1) / n for i in range(n)], label=label)


def _freshness(ax: Axes, data: dict[str, Any]) -> None:
    for case in data["steady"]:
        _cdf(ax, case["latencies_ms"], f"{case['rate']} rows/s")
    _cdf(ax, data["lone"]["visible_ms"], "lone commit")
    ax.axvline(50, color="grey", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("commit -> visible (ms)")
    ax.set_ylabel("fraction of commits")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title("freshness: latency distribution (CDF)")


def _query(ax: Axes, data: dict[str, Any]) -> None:
    labels, p50, p99, ft = [], [], [], []
    for case in data["cases"]:
        for phase in ("idle", "ingest"):
            for variant, figures in case[phase]["latency"].items():
                labels.append(f"{variant}\n{case['chunks'] // 1000}k {phase}")
                p50.append(figures["total"]["p50"])
                p99.append(figures["total"]["p99"])
                ft.append(figures["round_trips_ms"]["p50"])
    bars = {"search() p50": p50, "search() p99": p99, "round trips to Redis p50": ft}
    _bars(ax, labels, bars, log=True)
    ax.axhline(5, color="grey", linestyle="--", linewidth=1)
    ax.tick_params(axis="x", labelsize=6)
    ax.set_ylabel("ms")
    ax.set_title("query latency, k=10 (log)")


def _resources(ax: Axes, data: dict[str, Any]) -> None:
    samples = data["samples"]
    ax.plot(samples["t"], samples["rss_mb"], label="RSS (MB)")
    ax.axhline(200, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("s")
    ax.set_ylabel("MB")
    cpu = ax.twinx()
    t, used = samples["t"], samples["cpu_s"]
    ends = list(range(10, len(t), 10))  # 1 s windows: /proc counts CPU in 10 ms ticks
    rate = [(used[i] - used[i - 10]) / (t[i] - t[i - 10]) * 100 for i in ends]
    cpu.plot([t[i] for i in ends], rate, color="tab:orange", alpha=0.7, label="CPU % (1 s)")
    cpu.set_ylabel("CPU % of a core")
    ax.legend(loc="upper left", fontsize=8)
    cpu.legend(loc="upper right", fontsize=8)
    ax.set_title("connector daemon: RSS and CPU")


def _embedding(ax: Axes, data: dict[str, Any]) -> None:
    rounds = data["rounds"]
    _bars(
        ax,
        [r["round"] for r in rounds],
        {
            "tokens sent": [r["tokens_sent"] for r in rounds],
            "whole-row re-embed": [r["whole_row_tokens"] for r in rounds],
        },
        log=True,
    )
    ax.set_title("embedding: tokens sent to the embedder (log)")


PANELS: dict[str, Callable[[Axes, dict[str, Any]], None]] = {
    "ingest": _ingest,
    "snapshot": _snapshot,
    "freshness": _freshness,
    "query": _query,
    "resources": _resources,
    "embedding": _embedding,
}


def plot(results: dict[str, BenchResult], path: Path, title: str) -> None:
    shown = [name for name in PANELS if name in results and not results[name].error]
    columns = min(3, max(len(shown), 1))
    rows = max(1, -(-len(shown) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(6.5 * columns, 4.8 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax, name in zip(flat, shown, strict=False):
        PANELS[name](ax, results[name].data)
    for ax in flat[len(shown) :]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

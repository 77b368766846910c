"""What the benchmarks hand back, and how it is shown: the table on stdout, results.json and
bench.png."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Figure:
    """One line of the table: a measured value next to its ceiling(s) and target."""

    bench: str
    measure: str
    value: float
    unit: str
    ceilings: str = ""  # the ceilings measured in the same run, as text
    ratio: float | None = None  # value / the ceiling it is judged against
    target: str = ""
    met: bool | None = None  # None: no target

    @property
    def status(self) -> str:
        if self.met is None:
            return ""
        return "MET" if self.met else "MISSED"


@dataclass
class BenchResult:
    name: str
    figures: list[Figure] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    def add(self, measure: str, value: float, unit: str, **extra: Any) -> Figure:
        figure = Figure(self.name, measure, value, unit, **extra)
        self.figures.append(figure)
        return figure


def fmt(value: float, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


_HEADERS = ("benchmark", "measure", "value", "ceiling(s), same run", "ratio", "target", "status")


def _cells(figure: Figure) -> tuple[str, ...]:
    ratio = "" if figure.ratio is None else f"{figure.ratio:.2f}"
    return (
        figure.bench,
        figure.measure,
        fmt(figure.value, figure.unit),
        figure.ceilings,
        ratio,
        figure.target,
        figure.status,
    )


def table(figures: list[Figure]) -> str:
    rows = [_HEADERS, *(_cells(f) for f in figures)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADERS))]
    right = {2, 4}
    lines = []
    for n, row in enumerate(rows):
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, default=_jsonable, allow_nan=False) + "\n")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    return str(value)


def clean(value: Any) -> Any:
    """NaN and infinities as None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


def result_payload(result: BenchResult) -> dict[str, Any]:
    figures = [{**asdict(f), "status": f.status} for f in result.figures]
    return clean(
        {
            "seconds": round(result.seconds, 1),
            "error": result.error,
            "figures": figures,
            "data": result.data,
        }
    )

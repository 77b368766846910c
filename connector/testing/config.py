"""Settings for a throwaway run, and the same settings as the TOML file `connector run --config`
reads: the harness builds `Settings` in Python and hands the daemon subprocess a file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from connector.config import Settings

# The migrations' `documents` table, as config.example.toml configures it.
DOCUMENTS: dict[str, Any] = {
    "name": "public.documents",
    "index": "documents",
    "content": ["title", "body"],
    "metadata": {"source": "tag", "tags": "tag", "updated_at": "numeric"},
    "chunk_tokens": 256,
    "chunk_overlap": 32,
}


def settings_for(
    dsn: str,
    redis_url: str,
    tables: list[dict[str, Any]] | None = None,
    **sections: dict[str, Any],
) -> Settings:
    """Settings for the given servers: the hashing embedder, no HTTP server, the `documents`
    table unless `tables` says otherwise; each keyword names a section whose values are merged
    over those (`pipeline={"batch_max_rows": 50}`)."""
    data: dict[str, Any] = {
        "postgres": {"dsn": dsn},
        "redis": {"url": redis_url},
        "embedding": {"provider": "hashing"},
        "observability": {"metrics_port": 0},
        "tables": tables if tables is not None else [DOCUMENTS],
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return Settings(**data)


def settings_toml(settings: Settings) -> str:
    """`settings` as TOML that loads back to the same settings (secrets included: the file is
    the daemon's whole configuration)."""
    data = _plain(settings.model_dump())
    lines: list[str] = []
    for name, section in data.items():
        if isinstance(section, dict):
            lines += ["", f"[{name}]"]
            lines += _pairs(section)
    for name, items in data.items():
        if isinstance(items, list):
            for item in items:
                lines += ["", f"[[{name}]]"]
                lines += _pairs(item)
    return "\n".join(lines).lstrip("\n") + "\n"


def write_config(path: Path, settings: Settings) -> Path:
    """Write `settings` to `path` as a config file for `connector ... --config`; returns it."""
    path.write_text(settings_toml(settings), encoding="utf-8")
    return path


def _plain(value: Any) -> Any:
    """The dump without SecretStr wrappers and without unset (None) values."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _pairs(table: dict[str, Any]) -> list[str]:
    return [f"{key} = {_value(value)}" for key, value in table.items()]


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, int | float):
        return json.dumps(value)  # a JSON number is a TOML one
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_string(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {type(value).__name__}: {value!r}")


def _string(text: str) -> str:
    """A TOML basic string: JSON's escapes, except that TOML takes no surrogate pairs (so
    non-ASCII stays as it is) and no raw DEL."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")

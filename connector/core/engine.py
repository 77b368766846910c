"""What the Redis server is and what its search engine does (pure: sink.engine reads, this
decides).

An `EngineProfile` holds the server's version and its modules' (search, JSON, vector sets) as
the server reported them; the daemon logs it at start and exports it as a metric, `connector
status` and the API's /readyz show it. What a version changes is decided here: the full-text
scorer every BM25 query names, and the redis-py release the connector refuses to run with.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from connector.errors import ConfigError

# The full-text scorer every BM25 query names (query.commands), so that the same query ranks
# the same on every server: RediSearch 2.x ranks by TFIDF unless told, Redis 8's Query Engine
# by BM25STD (configurable from 8.4: search-default-scorer). BM25STD exists on RediSearch 2.8
# and 2.10 (measured on 2.10.5) and on Redis 8 (where `BM25`, another formula, is deprecated).
TEXT_SCORER = "BM25STD"
# The first search module whose own default scorer is BM25STD (Redis 8.0's Query Engine).
_BM25STD_DEFAULT_SINCE = (8, 0)
# The first search module with INT8 and UINT8 vectors (Redis 8.0).
_INTEGER_VECTORS_SINCE = (8, 0)

# Module names as MODULE LIST / INFO modules spell them -> the profile's field.
_MODULES = {"search": "search", "ft": "search", "rejson": "json", "vectorset": "vectorset"}

# redis-py releases the connector refuses: 8.0.0 parses FT.SEARCH's RESP3 map replies as empty
# (redis/redis-py#4107: 0 hits); pyproject excludes it, this catches an install that forced it.
_BROKEN_CLIENTS = {"8.0.0": "it returns no hits for FT.SEARCH over RESP3 (redis/redis-py#4107)"}


@dataclass(frozen=True, slots=True)
class EngineProfile:
    """The Redis server and its modules. A module's version is None when the server does not
    have it, "" when it has it but would not say which (MODULE LIST and INFO refused)."""

    redis: str = ""  # INFO server's redis_version ("" when INFO is refused)
    search: str | None = None
    json: str | None = None
    vectorset: str | None = None
    read_from: str = ""  # how the modules were read: MODULE LIST, INFO modules or FT._LIST

    @property
    def default_scorer(self) -> str:
        """The scorer the search module uses when a query names none ("" when unknown)."""
        version = _numbers(self.search or "")
        if not version:
            return ""
        return "BM25STD" if version[:2] >= _BM25STD_DEFAULT_SINCE else "TFIDF"

    def as_dict(self) -> dict[str, str | None]:
        """The profile with what the connector does about it (status --json, /readyz)."""
        shown: dict[str, str | None] = asdict(self)
        shown["text_scorer"] = TEXT_SCORER
        shown["default_scorer"] = self.default_scorer or None
        return shown

    def describe(self) -> str:
        """One line: `Redis 7.4.1, search 2.10.5, JSON 2.8.3 (MODULE LIST); ...`."""
        parts = [f"Redis {self.redis or 'version unknown'}"]
        for name, version in (("search", self.search), ("JSON", self.json),
                              ("vector sets", self.vectorset)):  # fmt: skip
            if version is not None:
                parts.append(f"{name} {version or 'version unknown'}")
        if self.search is None:
            parts.append("NO search module (the index needs Redis Stack or Redis 8)")
        read = f" (modules from {self.read_from})" if self.read_from else ""
        default = self.default_scorer or "unknown"
        return (
            f"{', '.join(parts)}{read}; full-text queries name scorer {TEXT_SCORER} "
            f"(the engine's default: {default})"
        )


def profile_of(
    server: Mapping[str, object], modules: Mapping[str, str], read_from: str
) -> EngineProfile:
    """The profile from INFO server's fields and the modules' versions (`modules_listed`,
    `modules_in_info`)."""
    return EngineProfile(
        redis=_text(server.get("redis_version", "")),
        search=modules.get("search"),
        json=modules.get("json"),
        vectorset=modules.get("vectorset"),
        read_from=read_from,
    )


def modules_listed(reply: Iterable[Mapping[Any, Any]]) -> dict[str, str]:
    """The modules the profile knows from MODULE LIST's reply (name, ver), versions as text."""
    found: dict[str, str] = {}
    for module in reply:
        entry = {_text(k): v for k, v in module.items()}
        field = _MODULES.get(_text(entry.get("name", "")).lower())
        if field is not None:
            found[field] = version_text(entry.get("ver"))
    return found


def modules_in_info(info: Mapping[str, object]) -> dict[str, str]:
    """The modules from INFO modules as redis-py parses it (`modules`: name, ver; RediSearch
    adds `search_version`)."""
    listed = info.get("modules", [])
    found = modules_listed(listed if isinstance(listed, list) else [])
    if info.get("search_version"):
        found["search"] = _text(info["search_version"])
    return found


def version_text(ver: object) -> str:
    """A module's version as text: MODULE LIST's 21005 is 2.10.5, 80400 is 8.4.0."""
    try:
        number = int(_text(ver))
    except ValueError:
        return _text(ver)
    if number < 10000:
        return str(number)
    return f"{number // 10000}.{number // 100 % 100}.{number % 100}"


def integer_vectors(search: str) -> bool:
    """Whether a search module of version `search` (text, "2.10.5") has INT8/UINT8 vectors
    (True when the version cannot be read: FT.CREATE decides)."""
    version = _numbers(search)
    return not version or version[:2] >= _INTEGER_VECTORS_SINCE


def check_client(version: str) -> None:
    """Refuse a redis-py release known to lose search results, naming the fix."""
    why = _BROKEN_CLIENTS.get(version)
    if why is not None:
        raise ConfigError(
            f"redis-py {version} is installed and the connector cannot search with it: {why}. "
            "Fix: pip install 'redis!=8.0.0'"
        )


def _numbers(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return "" if value is None else str(value)

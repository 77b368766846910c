"""Real-time retrieval for AI applications, kept in sync with PostgreSQL.

The connector follows PostgreSQL logical replication (wal2json), turns committed changes of the
configured content tables into chunked, embedded Redis vector-search keys, and ships `search()`
and `answer()` to query the synced index.

The public surface is re-exported here; the packages under it are the implementation:
`core` (pure), `source` (PostgreSQL), `sink` (Redis writes), `embed`, `flow` (the daemon),
`ops` (operator commands), `query`, `testing` (the shared harness).
"""

from typing import TYPE_CHECKING, Any

from connector.config import Settings, load_settings
from connector.errors import (
    ConfigError,
    ConnectorError,
    ModelMismatchError,
    NotCaughtUpError,
    QueryError,
    RedisIndexError,
)

if TYPE_CHECKING:
    from connector.query import (
        Answer,
        FilterValue,
        Hit,
        Searcher,
        answer,
        close_searchers,
        search,
        searcher,
        visibility_clause,
        visibility_filter,
    )

# The query side loads the embedding providers and the chat client: imported when first
# asked for, so that the daemon (`python -m connector.cli run`) does not carry it.
_QUERY = {
    "Answer", "FilterValue", "Hit", "Searcher", "answer",
    "close_searchers", "search", "searcher", "visibility_clause", "visibility_filter",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _QUERY:
        from connector import query

        return getattr(query, name)
    raise AttributeError(f"module 'connector' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "Answer",
    "ConfigError",
    "ConnectorError",
    "FilterValue",
    "Hit",
    "ModelMismatchError",
    "NotCaughtUpError",
    "QueryError",
    "RedisIndexError",
    "Searcher",
    "Settings",
    "__version__",
    "answer",
    "close_searchers",
    "load_settings",
    "search",
    "searcher",
    "visibility_clause",
    "visibility_filter",
]

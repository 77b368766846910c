"""The read side: `search()` over the synced index, and `answer()` built on it.

It imports `core`, `sink`'s schema, checkpoint and connection helpers, and `embed`; never
`source` (no PostgreSQL driver is loaded by a search) or the daemon.
"""

from connector.query.answerer import Answer, Answerer, answer
from connector.query.searcher import (
    FilterValue,
    Found,
    Hit,
    NotCaughtUpError,
    Searcher,
    close_searchers,
    search,
    searcher,
    visibility_clause,
    visibility_filter,
)

__all__ = [
    "Answer",
    "Answerer",
    "FilterValue",
    "Found",
    "Hit",
    "NotCaughtUpError",
    "Searcher",
    "answer",
    "close_searchers",
    "search",
    "searcher",
    "visibility_clause",
    "visibility_filter",
]

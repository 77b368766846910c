"""The read side: `search()` over the synced index, and `answer()` built on it.

It imports `core`, `sink`'s schema, checkpoint and connection helpers, and `embed`; never
`source` (no PostgreSQL driver is loaded by a search) or the daemon.

The pieces: `filters` (a search's filters as query text), `commands` (its FT.SEARCH commands
and how its KNN runs), `visibility` (the read-side visibility rule), `hits`, `fusion` (hybrid
rank fusion): pure; `alias` (which physical index, its model), `embedders` (the question's
vector), `searcher` (the round trips, and `search()`), `answerer`.
"""

from connector.errors import NotCaughtUpError
from connector.query.answerer import Answer, Answerer, answer
from connector.query.filters import FilterValue
from connector.query.hits import Found, Hit
from connector.query.searcher import Searcher, SearchOptions, close_searchers, search, searcher
from connector.query.visibility import visibility_clause, visibility_filter

__all__ = [
    "Answer",
    "Answerer",
    "FilterValue",
    "Found",
    "Hit",
    "NotCaughtUpError",
    "SearchOptions",
    "Searcher",
    "answer",
    "close_searchers",
    "search",
    "searcher",
    "visibility_clause",
    "visibility_filter",
]

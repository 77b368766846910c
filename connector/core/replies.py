"""Search replies that carry warnings (pure): RediSearch answers some failures with results and
a warning instead of an error, and such an answer is never handed back as a complete one.

- A query that runs past the search timeout under ON_TIMEOUT RETURN (RediSearch 2.x's default;
  Redis 8: search-on-timeout) returns what it found so far, warning "Timeout limit was reached".
- Redis 8.4's search-on-oom RETURN answers a query while Redis is at maxmemory with no results,
  warning that the shard "failed to execute the query due to insufficient memory".
- An index whose background scan ran out of memory warns that it holds partial data.

RESP3 carries the warnings (`warning` in FT.SEARCH's map). RESP2 does not: such a reply is
indistinguishable from a complete one, which is why every connector client speaks RESP3
(sink.redis_client). `check_complete` is called where every FT.SEARCH reply is parsed
(sink.redis_client.search_docs).
"""

from __future__ import annotations

from connector.errors import IncompleteAnswer

_TIMEOUT_FIX = (
    "Fix: raise the search timeout (RediSearch 2.x: FT.CONFIG SET TIMEOUT <ms>, or the module "
    "argument TIMEOUT; Redis 8: CONFIG SET search-timeout <ms>; the default is 500 ms), or ask "
    "a cheaper search (fewer words in a hybrid question, a narrower filter). Searches slow "
    "down while Redis is busy with writes (a bulk load, a rebuild)"
)
_OOM_FIX = (
    "Fix: give Redis memory (raise maxmemory, or shrink the index: `connector status` shows "
    "used_memory); with search-on-oom FAIL Redis refuses such a search instead"
)
_PARTIAL_INDEX_FIX = (
    "Fix: give Redis memory (raise maxmemory), then rebuild the index (`connector reindex`)"
)


def reply_warnings(reply: object) -> list[str]:
    """The warnings of an FT.SEARCH reply (a RESP3 map; anything else carries none)."""
    if not isinstance(reply, dict):
        return []
    found = reply.get(b"warning", reply.get("warning")) or []
    if isinstance(found, (bytes, str)):
        found = [found]
    return [w.decode(errors="replace") if isinstance(w, bytes) else str(w) for w in found]


def check_complete(reply: object) -> None:
    """Raise IncompleteAnswer when the reply carries a warning: its results may be partial."""
    warnings = reply_warnings(reply)
    if warnings:
        raise IncompleteAnswer(describe(warnings))


def describe(warnings: list[str]) -> str:
    """What the warnings mean for a search, the setting behind them and the fix."""
    said = "; ".join(repr(w) for w in warnings)
    text = " ".join(warnings).lower()
    if "timeout" in text:
        return (
            "Redis stopped the search at its query timeout and answered with the results found "
            f"so far ({said}: ON_TIMEOUT RETURN, Redis 8: search-on-timeout return); the "
            f"connector does not hand back a partial answer. {_TIMEOUT_FIX}"
        )
    if "insufficient memory" in text or "not enough memory" in text:
        return (
            "Redis is at maxmemory and answered the search without results "
            f"({said}: search-on-oom RETURN); the connector does not hand back an empty answer "
            f"as a complete one. {_OOM_FIX}"
        )
    if "partial data" in text:
        return f"the index holds partial data ({said}): searches miss rows. {_PARTIAL_INDEX_FIX}"
    return (
        f"Redis answered the search with a warning ({said}): its results may be incomplete, so "
        "the connector does not return them"
    )

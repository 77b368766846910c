"""A search's filters as RediSearch query text (pure: no I/O).

User values never become query syntax: tag and text values travel as query parameters
(PARAMS), numbers are parsed as numbers, and field names must be metadata fields of the index.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from connector.core.fulltext import words as fulltext_words
from connector.core.pgtypes import tag_text, tag_value
from connector.errors import QueryError

FilterValue = str | int | float | Sequence[str | int | float] | tuple[float | None, float | None]
# RediSearch 2.10 fails to parse a text filter of about 250 words ("Parser stack overflow"):
# more is the caller's error, said as such (serve.max_filter_words stays at or below it).
MAX_FILTER_WORDS = 200


@dataclass(slots=True)
class Query:
    """A RediSearch query whose user values all travel as PARAMS, never as query syntax: the
    query string holds only field names (checked against the index) and parameter names."""

    clauses: list[str] = field(default_factory=list)
    params: dict[str, str | bytes] = field(default_factory=dict)

    def param(self, value: str | bytes) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return "$" + name

    @property
    def where(self) -> str:
        return " ".join(self.clauses) or "*"

    def args(self) -> list[str | bytes]:
        flat: list[str | bytes] = ["PARAMS", str(2 * len(self.params))] if self.params else []
        for name, value in self.params.items():
            flat += [name, value]
        return flat


def build_query(fields: Mapping[str, str], filters: Mapping[str, FilterValue] | None) -> Query:
    """The filter part of a query for `filters` ({field: value}); matches all when empty."""
    query = Query()
    for name, value in (filters or {}).items():
        kind = fields.get(name)
        if kind is None:
            known = ", ".join(sorted(fields)) or "none"
            raise QueryError(f"unknown filter field {name!r} (metadata fields: {known})")
        query.clauses.append(_clause(query, name, kind, value))
    return query


def _number(value: object, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise QueryError(f"filter {name}: {value!r} is not a number")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise QueryError(f"filter {name}: {value!r} is not a number") from None
    if number != number:
        raise QueryError(f"filter {name}: NaN is not a valid bound")
    return repr(number)


def _no_range(name: str, kind: str) -> QueryError:
    also = " or a list of values (any of)" if kind == "tag" else ""
    return QueryError(
        f"filter {name}: a range applies to numeric fields, and {name} is a {kind} field: "
        f"give a value{also}"
    )


def _clause(query: Query, name: str, kind: str, value: FilterValue) -> str:
    if kind == "tag":
        if isinstance(value, tuple):
            raise _no_range(name, kind)
        values = [value] if isinstance(value, str | int | float) else list(value)
        texts = [tag_text(tag_value(v)) for v in values]  # as the index holds them
        if not texts or not all(texts):
            raise QueryError(f"filter {name}: tag values must not be empty")
        # RediSearch still reads backslash escapes in a tag parameter: double them.
        params = [query.param(t.replace("\\", "\\\\")) for t in texts]
        return f"@{name}:{{" + " | ".join(params) + "}"
    if kind == "numeric":
        if isinstance(value, tuple):
            low, high = value
            low_text = "-inf" if low is None else _number(low, name)
            high_text = "+inf" if high is None else _number(high, name)
            return f"@{name}:[{low_text} {high_text}]"
        exact = _number(value, name)
        return f"@{name}:[{exact} {exact}]"
    if isinstance(value, tuple):
        raise _no_range(name, kind)
    words = fulltext_words(str(value))  # the words the index holds (core.fulltext)
    if not words:
        raise QueryError(f"filter {name}: no words to match in {value!r}")
    if len(words) > MAX_FILTER_WORDS:
        raise QueryError(f"filter {name}: {len(words)} words; at most {MAX_FILTER_WORDS}")
    return f"@{name}:(" + " ".join(query.param(w) for w in words) + ")"

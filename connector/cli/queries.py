"""The commands that query the index: search and ask, and their `--filter FIELD=VALUE` options."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from connector.errors import QueryError

if TYPE_CHECKING:  # the query side (embedders, chat client) loads only when a command runs
    from connector.query import FilterValue


def search(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from connector.config import load_settings
    from connector.query import searcher

    settings = load_settings(args.config)
    found = searcher(settings, args.index)
    filters = parse_filters(args.filter or [], found.spec.fields)
    hits = found.search(
        args.text, args.k, filters, args.min_lsn, hybrid=args.hybrid, timeout_s=args.timeout
    )
    if args.json:
        print(json.dumps([asdict(hit) for hit in hits], indent=2, ensure_ascii=False))
        return 0
    if not hits:
        print("no results")
    for rank, hit in enumerate(hits, 1):
        key = ",".join(hit.key)
        snippet = " ".join(hit.content.split())[:160]
        print(f"{rank:>2}. {hit.score:.3f}  {hit.table} [{key}] chunk {hit.chunk}")
        print(f"    {snippet}")
        if hit.metadata:
            print("    " + "  ".join(f"{k}={v}" for k, v in hit.metadata.items()))
    return 0


def ask(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from connector.config import load_settings
    from connector.query import searcher
    from connector.query.answerer import Answerer

    settings = load_settings(args.config)
    found = searcher(settings)
    filters = parse_filters(args.filter or [], found.spec.fields)
    answerer = Answerer(settings, found)

    def show(piece: str) -> None:
        if not args.json:
            print(piece, end="", flush=True)

    try:
        result = answerer.stream(args.question, args.k, filters, on_token=show)
    finally:
        answerer.close()
    if args.json:
        print(json.dumps(asdict(result), indent=2, ensure_ascii=False))
        return 0
    print("\n\nSources:")
    for number, hit in enumerate(result.sources, 1):
        mark = "*" if hit in result.cited else " "
        print(f" {mark}[{number}] {hit.table} [{','.join(hit.key)}] chunk {hit.chunk}")
    return 0


def parse_filters(items: Sequence[str], fields: dict[str, str]) -> dict[str, FilterValue]:
    """`field=value`; numeric fields take `N` or a range `LOW..HIGH` (either side may be empty);
    tag fields take `a|b` for any of several values. Bad input raises QueryError naming the
    fields there are."""
    filters: dict[str, FilterValue] = {}
    known = ", ".join(f"{name} ({kind})" for name, kind in sorted(fields.items())) or "none"
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise QueryError(f"--filter {item!r}: use FIELD=VALUE (fields: {known})")
        kind = fields.get(name)
        if kind is None:
            raise QueryError(f"--filter {item!r}: unknown field {name!r} (fields: {known})")
        if kind == "numeric":
            filters[name] = _numeric_filter(item, value)
        elif kind == "tag" and "|" in value:
            filters[name] = value.split("|")
        else:
            filters[name] = value
    return filters


def _numeric_filter(item: str, value: str) -> float | tuple[float | None, float | None]:
    try:
        if ".." in value:
            low, _, high = value.partition("..")
            return (float(low) if low else None, float(high) if high else None)
        return float(value)
    except ValueError:
        raise QueryError(
            f"--filter {item!r}: a numeric field takes a number N or a range LOW..HIGH"
        ) from None

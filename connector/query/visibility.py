"""The read-side visibility rule: a search counts a chunk only if it belongs to its row's version
current at the view it read (sink.view, core.versions).

The queries run without the LSN filter where they can (RediSearch answers a KNN with it far more
slowly) and over-fetch candidates; the manifest check here keeps the current ones. External
readers add `visibility_filter` (or `visibility_clause`) to their own queries instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import redis

from connector.core.lsn import Lsn
from connector.core.versions import Manifest, id_lsn
from connector.query.hits import Hit, Score, make_hit
from connector.sink.checkpoint import read_visible
from connector.sink.schema import IndexSpec
from connector.sink.view import View

# Extra candidates fetched so that hits on superseded versions (dropped by the manifest check)
# rarely leave fewer than k; when they do, the search asks again for as many as the share of
# current ones it saw calls for, up to a cap.
# Each candidate costs its fields and its row's manifest on the wire: few, then.
_OVERFETCH_MIN = 3
MAX_FETCH = 1_000

# A reply's documents: (chunk key, {field: value}).
Docs = list[tuple[str, dict[str, str]]]


class ViewTooOld(Exception):
    """The versions a search needed were collected after it read the visible LSN."""


def visibility_clause(visible: Lsn) -> str:
    """The filter a reader adds to see only chunk versions written at or before `visible`
    (the checkpoint's `visible` field): what an external client (redisvl, raw FT.SEARCH) adds
    to read a consistent prefix. Without the manifest check `search()` also makes, such a
    client may still see a superseded or deleted row's chunk, for up to the garbage
    collection grace period."""
    return f"@lsn:[-inf {visible.value}]"


def visibility_filter(client: redis.Redis, slot: str) -> str:
    """`visibility_clause` at the visible LSN Redis holds now for `slot`: prepend it to the
    query of an external client, e.g. `f"{visibility_filter(r, 'connector')} @source:{{faq}}"`."""
    return visibility_clause(read_visible(client, slot))


def current_hits(
    spec: IndexSpec, found: Docs, view: View, manifests: Mapping[tuple[str, str], Manifest],
    score: Score,
) -> list[Hit]:  # fmt: skip
    """The hits whose chunk belongs to its row's version current at the view, in order,
    each with its position in that version. Raises ViewTooOld when a row no longer holds
    the version the view needs (collected since the visible LSN was read)."""
    hits = []
    for key, values in found:
        row = (values.get("table", ""), values.get("pk", ""))
        chunk = key.rpartition(":")[2]
        manifest = manifests[row]
        version = view.current(row[0], manifest)
        if version is not None and chunk in version.chunks:
            values["chunk"] = str(version.chunks.index(chunk))
            hits.append(make_hit(spec, values, score(values)))
        elif manifest.at(view.visible) is None and id_lsn(chunk) <= view.visible:
            raise ViewTooOld
    return hits


def rows_of(found: Docs) -> list[tuple[str, str]]:
    """The rows (table, encoded key) of `found`'s chunks, each once, in order."""
    return list(dict.fromkeys((v.get("table", ""), v.get("pk", "")) for _k, v in found))


def overfetched(need: int) -> int:
    """How many candidates to ask for first when `need` current hits are needed."""
    return need + max(_OVERFETCH_MIN, need // 4)


def widened(wanted: int, need: int, current: int) -> int:
    """How many candidates to ask for after `current` of `wanted` were current: enough for
    `need` at that share, with a margin (and at least twice as many), up to the cap."""
    share = max(current, 1) / wanted
    return min(MAX_FETCH, max(2 * wanted, math.ceil(1.5 * need / share)))

"""What a search hands back: `Hit`s built from FT.SEARCH replies, and their scores (pure)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from connector.core.chunking import TRUNCATED_FIELD
from connector.core.fulltext import ORIGINAL_FIELD, readable
from connector.core.keys import decode_key
from connector.core.lsn import Lsn
from connector.core.pgtypes import TAG_SEPARATOR
from connector.sink.schema import IndexSpec

# A hit's score from the fields of its reply (RediSearch's `__score` for a KNN).
Score = Callable[[dict[str, str]], float]


@dataclass(frozen=True, slots=True)
class Hit:
    """One matching chunk of a source row."""

    table: str
    key: tuple[str, ...]
    chunk: int
    content: str
    # cosine similarity with `distance = "cosine"`, the inner product with "ip", 1 / (1 + squared
    # L2 distance) with "l2"; a fused rank score when hybrid
    score: float
    metadata: dict[str, str] = field(default_factory=dict)
    index: str = ""  # the physical index that answered (the alias's, sink.layout)


@dataclass(frozen=True, slots=True)
class Found:
    """A search's hits, and the visible LSN they reflect (every commit up to it)."""

    hits: list[Hit]
    lsn: Lsn


def returned_fields(spec: IndexSpec) -> list[str]:
    """The fields of a chunk a hit is made of (what FT.SEARCH RETURNs)."""
    return ["content", ORIGINAL_FIELD, "table", "pk", "chunk", TRUNCATED_FIELD, *spec.fields]


def make_hit(spec: IndexSpec, values: dict[str, str], score: float) -> Hit:
    """The hit of one reply's fields (`returned_fields`) from the physical index of `spec`."""
    return Hit(
        table=values.get("table", ""),
        key=decode_key(values.get("pk", "")),
        chunk=int(values.get("chunk", "0") or 0),
        content=readable(values.get("content", ""), values.get(ORIGINAL_FIELD)),
        score=score,
        metadata={
            f: values[f].replace(TAG_SEPARATOR, ",")
            for f in (*spec.fields, TRUNCATED_FIELD)
            if f in values
        },
        index=spec.physical_name,
    )


def knn_score(spec: IndexSpec) -> Score:
    """How a KNN hit of the index of `spec` is scored (by its vector distance)."""
    return closeness if spec.vector.distance == "l2" else similarity


def similarity(values: dict[str, str]) -> float:
    """COSINE and IP: RediSearch's distance is 1 - similarity (cosine, or inner product)."""
    return 1.0 - float(values.get("__score", "1"))


def closeness(values: dict[str, str]) -> float:
    """L2: RediSearch's distance is the squared Euclidean distance d; the score is 1 / (1 + d)
    (1 for the same vector, towards 0 far away)."""
    return 1.0 / (1.0 + float(values.get("__score", "inf")))


def no_score(_values: dict[str, str]) -> float:
    return 0.0  # a BM25 hit's place in its ranking is what fusion uses

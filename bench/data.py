"""Deterministic synthetic text: pseudo-words drawn with a Zipf law (a few very common words, a
long tail of rare ones), grouped into sentences and paragraphs; rows for COPY; chunk texts as
the connector cuts them (for the ceilings, which write the same chunks)."""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate

from connector.config import Settings
from connector.core.chunking import Chunker
from connector.embed.tokenizer import get_encoding

_SYLLABLES = [
    "ka", "to", "ri", "men", "sa", "lo", "ver", "den", "ta", "shi", "mon", "pa", "li", "nor",
    "ge", "bru", "ca", "fel", "di", "an", "tor", "el", "qui", "ster", "ab", "ron", "mi", "zu",
    "hal", "ne", "po", "ret", "sil", "gar", "um", "tek", "vo", "bis", "lan", "dra", "ex",
    "mor", "tin", "ul", "pri", "sto", "wen",
]  # fmt: skip
SOURCES = [f"src{n}" for n in range(10)]
TAGS = ["alpha", "beta", "gamma", "delta", "omega"]


@functools.lru_cache(maxsize=1)
def vocabulary(size: int = 5000) -> tuple[str, ...]:
    rng = random.Random(7)
    words: dict[str, None] = {}
    while len(words) < size:
        n = rng.choice((1, 2, 2, 2, 3, 3))
        words["".join(rng.choice(_SYLLABLES) for _ in range(n))] = None
    return tuple(words)


@functools.lru_cache(maxsize=1)
def _zipf_weights(size: int) -> tuple[float, ...]:
    return tuple(accumulate(1.0 / (rank + 1) for rank in range(size)))


class TextGen:
    """Seeded generator of words, sentences, paragraphs and documents."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.words = vocabulary()
        self.cum = _zipf_weights(len(self.words))

    def some_words(self, n: int) -> list[str]:
        return self.rng.choices(self.words, cum_weights=self.cum, k=n)

    def sentence(self) -> str:
        words = self.some_words(self.rng.randint(6, 16))
        return " ".join(words).capitalize() + "."

    def paragraph(self, words: int) -> str:
        sentences: list[str] = []
        count = 0
        while count < words:
            sentence = self.sentence()
            sentences.append(sentence)
            count += sentence.count(" ") + 1
        return " ".join(sentences)

    def document(self, paragraphs: int, words_per_paragraph: int) -> list[str]:
        return [self.paragraph(words_per_paragraph) for _ in range(paragraphs)]

    def title(self) -> str:
        return " ".join(self.some_words(self.rng.randint(3, 6))).title()

    def query(self) -> str:
        return " ".join(self.some_words(self.rng.randint(3, 6)))


@dataclass(frozen=True, slots=True)
class Row:
    id: int
    title: str
    body: str
    source: str
    tags: tuple[str, ...]

    @property
    def text(self) -> str:
        """The text the connector chunks: content columns joined by a blank line."""
        return "\n\n".join(p for p in (self.title, self.body) if p.strip())


def make_rows(
    count: int, paragraphs: int, words_per_paragraph: int, seed: int = 1, first_id: int = 1
) -> list[Row]:
    gen = TextGen(seed)
    rows = []
    for i in range(first_id, first_id + count):
        body = "\n\n".join(gen.document(paragraphs, words_per_paragraph))
        tags = tuple(sorted(set(gen.rng.sample(TAGS, 2))))
        rows.append(Row(i, gen.title(), body, SOURCES[i % len(SOURCES)], tags))
    return rows


def short_rows(count: int, seed: int = 1, first_id: int = 1) -> list[Row]:
    """Rows of one chunk each (~70 words, ~150 tokens: well under chunk_tokens 256)."""
    return make_rows(count, 1, 60, seed, first_id)


def long_rows(count: int, seed: int = 2, first_id: int = 1) -> list[Row]:
    """Rows of ~1,000 tokens in 6 paragraphs (several chunks each at chunk_tokens 256)."""
    return make_rows(count, 6, 64, seed, first_id)


COPY_COLUMNS = "(id, title, body, source, tags)"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "")


def copy_buffer(rows: Sequence[Row]) -> bytes:
    """The rows in COPY text format, for `COPY documents (id, title, body, source, tags)`."""
    lines = [
        f"{r.id}\t{_escape(r.title)}\t{_escape(r.body)}\t{r.source}\t{{{','.join(r.tags)}}}\n"
        for r in rows
    ]
    return "".join(lines).encode()


def batches(rows: Sequence[Row], size: int) -> Iterator[Sequence[Row]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def chunker(settings: Settings) -> Chunker:
    table = settings.tables[0]
    return Chunker(get_encoding(settings.embedding.model), table.chunk_tokens, table.chunk_overlap)


def row_chunks(settings: Settings, rows: Sequence[Row]) -> list[list[str]]:
    """Each row's chunk texts, cut exactly as the connector cuts them."""
    cut = chunker(settings)
    return [cut.chunk(row.text) for row in rows]


def count_tokens(settings: Settings, texts: Sequence[str]) -> int:
    encoding = get_encoding(settings.embedding.model)
    return sum(len(tokens) for tokens in encoding.encode_ordinary_batch(list(texts)))

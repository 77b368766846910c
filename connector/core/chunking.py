"""Token-aware chunking of row text (pure: it is handed a tokenizer, see embed.tokenizer).

Chunks are cut so that an edit to one paragraph of a long document changes as few chunks as
possible: unchanged chunks keep their text, hence their text hash, hence their embedding.

How `Chunker.chunk` cuts (see its docstring for the details and the reasons):

1. the text is split into paragraphs at blank lines;
2. consecutive paragraphs are grouped by a *content-defined* split tree: every paragraph
   boundary gets a strength from a hash of the first characters of the paragraph after it, and
   a group that is too long is split at its strongest boundary, recursively, until each group
   fits in `chunk_tokens`. Where a group is cut therefore depends on the text near the cut, not
   on the size of everything before it (greedy packing would shift every later boundary when
   one paragraph grows or shrinks);
3. a paragraph longer than `chunk_tokens` on its own is cut into token windows that overlap by
   `overlap` tokens. Only these windows overlap: packed groups do not, so no chunk depends on
   its predecessor's text.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from itertools import accumulate, pairwise
from typing import Protocol


class Encoding(Protocol):
    """What chunking needs of a tokenizer (a `tiktoken.Encoding` has it)."""

    def encode_ordinary(self, text: str) -> list[int]: ...

    def decode_single_token_bytes(self, token: int) -> bytes: ...

    def decode_bytes(self, tokens: list[int]) -> bytes: ...

    def token_byte_values(self) -> list[bytes]: ...


TRUNCATED_FIELD = "content_truncated"
"""The chunk hash field (and hit metadata) of a row whose text was cut at the table's
`max_content_tokens`: the number of tokens indexed."""


def text_hash(text: str) -> str:
    """The content address of a chunk text (a row's manifest lists its chunks' hashes)."""
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


# A blank line: a newline followed by one or more whitespace-only lines.
_BLANK_LINES = re.compile(r"\n(?:[^\S\n]*\n)+")
_LEADING_BLANK_LINES = re.compile(r"(?:[^\S\n]*\n)*")
# How much of a paragraph's start decides the strength of the boundary before it. Short enough
# that most edits (a word in the middle, a sentence appended) leave it alone.
_KEY_CHARS = 40
# Texts up to this many characters per allowed token are tried as one chunk first (English
# averages about 4 characters per token; a longer text rarely fits, and is split at once).
_LIKELY_FITS_CHARS_PER_TOKEN = 8
# `Chunker.limit` counts tokens this many characters at a time, cutting windows at whitespace
# (where the tokenizer splits anyway): its memory is one window's tokens, whatever the text.
_COUNT_WINDOW_CHARS = 1 << 16
_MAX_BYTES_PER_CHAR = 4  # UTF-8; a token holds at least one byte


@dataclass(frozen=True, slots=True)
class Chunker:
    """Cuts row text into chunks of at most `chunk_tokens` tokens, stable under local edits.

    Paragraphs (blank-line separated) are never split unless one alone is longer than
    `chunk_tokens`; then it is cut into token windows overlapping by `overlap` tokens, balanced
    in length, cut only where the bytes decode cleanly (no broken multi-byte characters).
    Short paragraphs are grouped by a content-defined split tree (module docstring), which
    bounds the effect of an edit: an edit that keeps a paragraph's first 40 characters changes
    only the group holding that paragraph (re-embedding at most about `chunk_tokens` plus the
    growth of the paragraph); an edit of a paragraph's start also moves one group boundary.
    Groups are about half full on average, the price of that stability. Chunk texts are exact
    slices of the input (whitespace around paragraphs trimmed), so nothing else is lost.
    """

    encoding: Encoding
    chunk_tokens: int
    overlap: int = 0
    # A row's text is cut after this many tokens before chunking (`limit`); None: never.
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.chunk_tokens < 1:
            raise ValueError(f"chunk_tokens must be positive, not {self.chunk_tokens}")
        if not 0 <= self.overlap < self.chunk_tokens:
            raise ValueError(
                f"overlap ({self.overlap}) must be >= 0 and below chunk_tokens "
                f"({self.chunk_tokens})"
            )

    def count_tokens(self, text: str) -> int:
        return len(self.encoding.encode_ordinary(text))

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of `text` with at most `max_tokens` tokens (whole characters)."""
        tokens = self.encoding.encode_ordinary(text)
        if len(tokens) <= max_tokens:
            return text
        if max_tokens <= 0:
            return ""
        span = _TokenSpan(self.encoding, tokens)
        end = span.clean_at_or_before(max_tokens, 0)
        piece = span.text(0, end)
        while end > 0 and self.count_tokens(piece) > max_tokens:
            end = span.clean_at_or_before(end - 1, 0)
            piece = span.text(0, end)
        return piece

    @property
    def max_chars(self) -> int | None:
        """The most characters `max_tokens` tokens can span (each token is at most the
        encoding's longest token, in bytes, and a character at least a byte): a text's first
        max_chars characters are all `limit` can keep."""
        if self.max_tokens is None:
            return None
        return self.max_tokens * _longest_token(self.encoding)

    def limit(self, text: str) -> tuple[str, bool]:
        """`text` cut after `max_tokens` tokens (whole characters), and whether it was cut.

        Tokens are counted window by window (64 Ki characters, cut at whitespace), so a text of
        any size costs one window's tokens in memory, and a text is read only up to the limit.
        Counts can differ from encoding the whole text by a token at a window's edge."""
        limit = self.max_tokens
        if limit is None or len(text) * _MAX_BYTES_PER_CHAR <= limit:
            return text, False
        counted, start = 0, 0
        while start < len(text):
            end = _window_end(text, start)
            tokens = self.encoding.encode_ordinary(text[start:end])
            if counted + len(tokens) > limit:
                span = _TokenSpan(self.encoding, tokens)
                keep = span.clean_at_or_before(limit - counted, 0)
                return (text[:start] + span.text(0, keep)).rstrip(), True
            counted += len(tokens)
            start = end
        return text, False

    def chunk(self, text: str) -> list[str]:
        """The chunks of `text`, in order; [] for empty or whitespace-only text."""
        spans = _paragraph_spans(text)
        if not spans:
            return []
        whole = text[spans[0][0] : spans[-1][1]]
        if len(spans) == 1 or len(whole) <= self.chunk_tokens * _LIKELY_FITS_CHARS_PER_TOKEN:
            # Most rows fit in one chunk: one encoding of the whole text says so.
            tokens = self.encoding.encode_ordinary(whole)
            if len(tokens) <= self.chunk_tokens:
                return [whole]
            if len(spans) == 1:
                return self._windows(tokens)
        per_paragraph = [self.encoding.encode_ordinary(text[s:e]) for s, e in spans]
        return self._grouped(text, spans, per_paragraph)

    def _paragraph(self, paragraph: str, tokens: list[int]) -> list[str]:
        if len(tokens) <= self.chunk_tokens:
            return [paragraph]
        return self._windows(tokens)

    def _grouped(
        self, text: str, spans: list[tuple[int, int]], tokens: list[list[int]]
    ) -> list[str]:
        """Walk the split tree top-down, emitting every group that fits (module docstring)."""
        sizes = _GroupSizes.build(self, text, spans, tokens)
        if sizes.fits(0, len(spans) - 1):
            return [text[spans[0][0] : spans[-1][1]]]
        root, left, right = _cartesian_tree(_boundary_strengths(text, spans))
        out: list[str] = []
        stack = [(0, len(spans) - 1, root)]
        while stack:
            lo, hi, cut = stack.pop()
            if lo == hi:
                out.extend(self._paragraph(text[spans[lo][0] : spans[lo][1]], tokens[lo]))
            elif sizes.fits(lo, hi):
                out.append(text[spans[lo][0] : spans[hi][1]])
            else:
                stack.append((cut + 1, hi, right[cut]))
                stack.append((lo, cut, left[cut]))
        return out

    def _windows(self, tokens: list[int]) -> list[str]:
        """Overlapping token windows over one long paragraph, balanced in length."""
        span = _TokenSpan(self.encoding, tokens)
        size, overlap = self.chunk_tokens, self.overlap
        out: list[str] = []
        start = 0
        while True:
            remaining = span.n - start
            if remaining <= size:
                end = span.n
            else:
                windows = -(-(remaining - overlap) // (size - overlap))
                step = -(-(remaining - overlap) // windows)  # <= size - overlap
                end = span.clean_before(start + step + overlap, start)
            piece = span.text(start, end)
            # Re-encoding a slice can differ from the slice by a token at its edges.
            while self.count_tokens(piece) > size:
                shorter = span.clean_before(end - 1, start)
                if shorter >= end:
                    break  # one character longer than chunk_tokens: keep it whole
                end, piece = shorter, span.text(start, shorter)
            out.append(piece)
            if end >= span.n:
                return out
            start = span.clean_after(max(end - overlap, start + 1))


class _TokenSpan:
    """Token ids of one paragraph, to cut only between whole characters.

    A token can hold part of a multi-byte character; a boundary is clean when the token after
    it does not start with a UTF-8 continuation byte. Only the boundaries looked at are
    decoded (decoding every token separately costs more than the whole chunking).
    """

    __slots__ = ("encoding", "n", "tokens")

    def __init__(self, encoding: Encoding, tokens: list[int]) -> None:
        self.encoding = encoding
        self.tokens = tokens
        self.n = len(tokens)

    def is_clean(self, i: int) -> bool:
        if i <= 0 or i >= self.n:
            return True
        return self.encoding.decode_single_token_bytes(self.tokens[i])[0] & 0xC0 != 0x80

    def clean_at_or_before(self, i: int, floor: int) -> int:
        """The last clean boundary in [floor, i] (floor itself when none is clean)."""
        while i > floor and not self.is_clean(i):
            i -= 1
        return i

    def clean_before(self, i: int, floor: int) -> int:
        """The last clean boundary in (floor, i], or the first one after i if none (progress)."""
        j = self.clean_at_or_before(i, floor)
        return j if j > floor else self.clean_after(i)

    def clean_after(self, i: int) -> int:
        while not self.is_clean(i):
            i += 1
        return i

    def text(self, start: int, end: int) -> str:
        return self.encoding.decode_bytes(self.tokens[start:end]).decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class _GroupSizes:
    """Token counts of groups of consecutive paragraphs, to decide which groups fit.

    Estimates come from prefix sums of per-paragraph and per-separator token counts; a group
    that fits by estimate is checked by encoding it (tokens can merge across a paragraph
    boundary), so a chunk never exceeds `chunk_tokens`.
    """

    chunker: Chunker
    text: str
    spans: list[tuple[int, int]]
    cumulative: list[int]
    separators: list[int]

    @classmethod
    def build(
        cls, chunker: Chunker, text: str, spans: list[tuple[int, int]], tokens: list[list[int]]
    ) -> _GroupSizes:
        separators = _separator_tokens(chunker.encoding, text, spans)
        sizes = [len(t) + s for t, s in zip(tokens, separators, strict=True)]
        return cls(chunker, text, spans, list(accumulate(sizes, initial=0)), separators)

    def fits(self, lo: int, hi: int) -> bool:
        """Whether paragraphs lo..hi (inclusive) fit in one chunk."""
        estimate = self.cumulative[hi + 1] - self.cumulative[lo] - self.separators[hi]
        if estimate > self.chunker.chunk_tokens:
            return False
        group = self.text[self.spans[lo][0] : self.spans[hi][1]]
        return self.chunker.count_tokens(group) <= self.chunker.chunk_tokens


_LONGEST: dict[int, int] = {}  # id(encoding) -> its longest token, in bytes


def _longest_token(encoding: Encoding) -> int:
    found = _LONGEST.get(id(encoding))
    if found is None:
        found = _LONGEST[id(encoding)] = max(len(v) for v in encoding.token_byte_values())
    return found


def _window_end(text: str, start: int) -> int:
    """Where the counting window from `start` ends: before the last whitespace of its second
    half (or at its full size when there is none)."""
    end = start + _COUNT_WINDOW_CHARS
    if end >= len(text):
        return len(text)
    for i in range(end, end - _COUNT_WINDOW_CHARS // 2, -1):
        if text[i].isspace():
            return i
    return end


def _paragraph_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each paragraph: blank-line separated, trailing whitespace trimmed."""
    spans: list[tuple[int, int]] = []
    position = 0
    for match in _BLANK_LINES.finditer(text):
        _add_span(text, position, match.start(), spans)
        position = match.end()
    _add_span(text, position, len(text), spans)
    return spans


def _add_span(text: str, start: int, end: int, spans: list[tuple[int, int]]) -> None:
    if start < end and not text[start].isspace() and not text[end - 1].isspace():
        spans.append((start, end))  # the common case, without copying the paragraph
        return
    leading = _LEADING_BLANK_LINES.match(text, start, end)
    if leading is not None:
        start = leading.end()
    length = len(text[start:end].rstrip())
    if length:
        spans.append((start, start + length))


def _separator_tokens(encoding: Encoding, text: str, spans: list[tuple[int, int]]) -> list[int]:
    """Token count of the whitespace after each paragraph (0 after the last)."""
    cache: dict[str, int] = {}
    counts = []
    for (_, end), (start, _) in pairwise(spans):
        gap = text[end:start]
        if gap not in cache:
            cache[gap] = len(encoding.encode_ordinary(gap))
        counts.append(cache[gap])
    counts.append(0)
    return counts


def _boundary_strengths(text: str, spans: list[tuple[int, int]]) -> list[int]:
    """One hash per paragraph boundary, from the start of the paragraph after it.

    Boundary i lies between paragraphs i and i+1. A count of earlier paragraphs that start the
    same way is mixed in, so repeated starts (list items) still get distinct strengths.
    """
    seen: dict[str, int] = {}
    strengths = []
    for start, end in spans[1:]:
        head = text[start : start + _KEY_CHARS] if end - start > _KEY_CHARS else text[start:end]
        occurrence = seen.get(head, 0)
        seen[head] = occurrence + 1
        if occurrence:
            head = f"{head}\0{occurrence}"
        digest = hashlib.blake2b(head.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        strengths.append(int.from_bytes(digest, "big"))
    return strengths


def _cartesian_tree(keys: list[int]) -> tuple[int, list[int], list[int]]:
    """Root and children of the min-Cartesian tree of `keys`, built in O(n).

    The smallest key of any range is that range's root, so splitting a group of paragraphs at
    its root boundary is splitting it at its strongest boundary. Ties: the leftmost is higher.
    """
    left = [-1] * len(keys)
    right = [-1] * len(keys)
    stack: list[int] = []
    for i, key in enumerate(keys):
        last = -1
        while stack and keys[stack[-1]] > key:
            last = stack.pop()
        left[i] = last
        if stack:
            right[stack[-1]] = i
        stack.append(i)
    return (stack[0] if stack else -1), left, right

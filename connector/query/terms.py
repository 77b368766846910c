"""Which of a question's words the BM25 leg of a hybrid search asks for, and how many chunks of an
index hold each word (read once, kept a while).

The leg is an OR of the words, and RediSearch scores every chunk that holds any of them: its
cost is the number of chunks its words hold. The words are taken rarest first while that number
stays within a budget; a word past it is too common to rank at this index's size (its IDF is
low) and is left out. When no word taken would match anything, the rarest word that matches is
kept, so a chunk found only by common words is still ranked by them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence

import redis

from connector.query.commands import Command
from connector.sink.redis_client import command, search_total

# The chunks the leg's words may hold together (bench --only quality: recall@10 and MRR held;
# bench --only query: hybrid p99 at 50k chunks). An index of a few thousand chunks never
# reaches it: every word is searched.
POSTINGS_BUDGET = 5_000
# How long a word's count is kept (counts move slowly; a word newly common is searched for
# meanwhile, which costs time, never a result).
COUNTS_TTL_S = 300.0
_MAX_KEPT = 100_000  # counts kept in all; past it they are read again


def ranked_words(
    words: Sequence[str], counts: Mapping[str, int], budget: int = POSTINGS_BUDGET
) -> tuple[str, ...]:
    """`words` (each once, in lower case: RediSearch matches regardless of case) without those
    too common to rank, by `counts` (chunks holding each word), in their order."""
    unique = list(dict.fromkeys(word.lower() for word in words))
    kept: set[str] = set()
    total = 0
    for word in sorted(unique, key=lambda w: counts.get(w, 0)):
        if total + counts.get(word, 0) > budget:
            break
        kept.add(word)
        total += counts.get(word, 0)
    if total == 0:  # nothing taken matches: the rarest word that does
        matching = [word for word in unique if counts.get(word, 0)]
        kept.update(sorted(matching, key=lambda w: counts[w])[:1])
    return tuple(word for word in unique if word in kept)


def count_command(index: str, word: str) -> Command:
    """The read of how many chunks of `index` hold `word` (its reply: `search_total`)."""
    return [
        "FT.SEARCH", index, "@content:$w", "PARAMS", "2", "w", word,
        "LIMIT", "0", "0", "DIALECT", "2",
    ]  # fmt: skip


class TermCounts:
    """How many chunks of each index hold each word, as read, each kept for COUNTS_TTL_S
    (shared by a Searcher's threads), and the leg's budget of chunks (`ranked_words`)."""

    def __init__(self, budget: int = POSTINGS_BUDGET, ttl_s: float = COUNTS_TTL_S) -> None:
        self.budget = budget
        self.ttl_s = ttl_s
        self._counts: dict[tuple[str, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def missing(self, index: str, words: Iterable[str]) -> list[str]:
        """The words whose count for `index` is not kept, or too old."""
        now = time.monotonic()
        with self._lock:
            return [
                word
                for word in dict.fromkeys(words)
                if now - self._counts.get((index, word), (-self.ttl_s - 1, 0))[0] > self.ttl_s
            ]

    def learn(self, index: str, counts: Mapping[str, int]) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._counts) + len(counts) > _MAX_KEPT:
                self._counts.clear()
            self._counts.update({(index, word): (now, n) for word, n in counts.items()})

    def ranked(self, client: redis.Redis, index: str, words: Sequence[str]) -> tuple[str, ...]:
        """`ranked_words` of `words` in `index`, by the counts kept (those missing read first,
        in one round trip)."""
        unique = list(dict.fromkeys(word.lower() for word in words))
        missing = self.missing(index, unique)
        if missing:
            pipe = client.pipeline(transaction=False)
            for word in missing:
                command(pipe, *count_command(index, word))
            replies = pipe.execute()
            self.learn(index, {w: search_total(r) for w, r in zip(missing, replies, strict=True)})
        with self._lock:
            counts = {w: self._counts.get((index, w), (0.0, 0))[1] for w in unique}
        return ranked_words(unique, counts, self.budget)

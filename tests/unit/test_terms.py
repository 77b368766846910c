"""Which words the BM25 leg of a hybrid search asks for (query.terms.ranked_words)."""

from __future__ import annotations

from connector.query.terms import ranked_words


def test_words_are_taken_rarest_first_within_the_budget_in_their_order() -> None:
    counts = {"the": 9000, "ledger": 3000, "zebrafish": 2, "tank": 1500}
    assert ranked_words(["The", "ledger", "zebrafish", "tank"], counts, 5000) == (
        "ledger",
        "zebrafish",
        "tank",
    )
    assert ranked_words(["the", "ledger", "zebrafish", "tank"], counts, 2000) == (
        "zebrafish",
        "tank",
    )


def test_a_word_in_no_chunk_costs_nothing_and_is_kept() -> None:
    # (it may be in a chunk written since it was counted)
    assert ranked_words(["new", "zebrafish"], {"zebrafish": 2}, 10) == ("new", "zebrafish")


def test_when_no_word_taken_matches_the_rarest_matching_word_is_kept() -> None:
    counts = {"the": 9000, "ledger": 3000}
    assert ranked_words(["the", "ledger", "quokkaish"], counts, 100) == ("ledger", "quokkaish")
    assert ranked_words(["the", "ledger"], counts, 100) == ("ledger",)


def test_each_word_once_regardless_of_case() -> None:
    assert ranked_words(["Ledger", "ledger", "LEDGER"], {"ledger": 5}, 100) == ("ledger",)

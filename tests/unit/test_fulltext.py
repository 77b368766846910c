"""Text as the full-text index sees it (connector.core.fulltext): pure, no servers. What
RediSearch then finds, against a real server: tests/shapes/test_fulltext.py."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from connector.core.fulltext import ORIGINAL_FIELD, content_fields, fulltext, readable, words


def test_characters_redisearch_does_not_split_on_become_spaces() -> None:
    written = "title\n\nbody hello\u00a0world don\u2019t a\u2014b c\\d"
    assert fulltext(written) == "title  body hello world don t a b c d"


def test_what_redisearch_splits_on_is_kept_as_written() -> None:
    written = "a-b, c.d: e's (f) [g] 42 \u00e9t\u00e9 \u65e5\u672c"
    assert fulltext(written) == written


@given(st.text())
def test_the_text_keeps_its_length_and_its_words_their_places(text: str) -> None:
    indexed = fulltext(text)
    assert len(indexed) == len(text)
    assert words(indexed) == words(text)


def test_a_query_asks_for_runs_of_word_characters() -> None:
    assert words("don\u2019t stop-me now\u00a0\u00e9t\u00e9") == [
        "don",
        "t",
        "stop",
        "me",
        "now",
        "\u00e9t\u00e9",
    ]


def test_the_text_as_written_is_kept_only_when_normalising_changed_it() -> None:
    assert content_fields("plain words") == {"content": "plain words"}
    fields = content_fields("line\nbreak")
    assert fields == {"content": "line break", ORIGINAL_FIELD: "line\nbreak"}
    assert readable(fields["content"], fields.get(ORIGINAL_FIELD)) == "line\nbreak"
    assert readable("plain words", None) == "plain words"

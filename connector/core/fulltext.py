"""Text as the full-text index is to see it, and the words a query asks for (pure).

RediSearch 2.10 splits words only on the ASCII space, the tab and ASCII punctuation (measured:
not on LF, CR, VT, FF, NEL, the no-break spaces, U+2000-U+200A, U+2028, U+2029, U+3000, nor on
non-ASCII punctuation such as an em dash or a curly apostrophe). Text that holds one of those
joins the words on both sides into one term that no query finds: the title and the body that
the content columns are joined with a blank line, `hello` U+00A0 `world`, `don` U+2019 `t`.

A query takes the words of its text as runs of word characters (`words`); what is indexed for
full text (a chunk's `content`, `text` metadata fields) has every character that is neither a
word character nor one RediSearch splits on replaced by a space (`fulltext`), so the terms the
index holds are exactly the words a query can ask for. One space per character: the text keeps
its length and the words their places.

A chunk's `content` holds the normalised text; when that differs from the text as written, the
text as written is kept beside it in `content_original` (not indexed), which is what a search
hands back (`readable`). Nothing else changes: chunk ids hash the text as written, vectors embed
it.
"""

from __future__ import annotations

import re

__all__ = ["ORIGINAL_FIELD", "content_fields", "fulltext", "readable", "words"]

# The hash field that keeps a chunk's text as written when `content` holds it normalised.
ORIGINAL_FIELD = "content_original"
# What RediSearch 2.10's tokenizer splits on, besides nothing else (measured on every code point
# below U+3100 and the usual zero-width ones).
_SEPARATORS = " \t!\"#$%&'()*+,-./:;<=>?@[]^`{|}~"
_JOINING = re.compile("[^\\w" + re.escape(_SEPARATORS) + "]")
_WORD = re.compile(r"\w+")


def fulltext(text: str) -> str:
    """`text` with each character RediSearch would not split words on, but a query does,
    replaced by a space (line breaks, Unicode spaces, non-ASCII punctuation, backslashes)."""
    return _JOINING.sub(" ", text)


def words(text: str) -> list[str]:
    """The words of a query's text, as `fulltext` leaves them for the index to split."""
    return _WORD.findall(text)


def content_fields(text: str) -> dict[str, str]:
    """A chunk's text as hash fields: `content` (indexed, normalised) and, when normalising
    changed it, the text as written in `content_original`."""
    indexed = fulltext(text)
    return {"content": indexed} if indexed == text else {"content": indexed, ORIGINAL_FIELD: text}


def readable(content: str, original: str | None) -> str:
    """A chunk's text as written, from its `content` and `content_original` fields."""
    return original if original is not None else content

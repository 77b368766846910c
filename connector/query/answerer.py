"""answer(): retrieval-augmented answers streamed from an OpenAI-compatible chat model.

The question is searched with `search()`, the best chunks are numbered and packed into the
prompt within `chat.max_context_tokens` (counted with tiktoken), and the chat completion is
streamed token by token. The result carries the sources given to the model, and the ones its
text cites as [n].
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import openai

from connector.config import Settings, load_settings
from connector.core.chunking import Chunker
from connector.core.lsn import Lsn
from connector.embed.tokenizer import get_encoding
from connector.errors import ConfigError
from connector.query.filters import FilterValue
from connector.query.hits import Hit
from connector.query.searcher import Searcher, searcher

_CITATION = re.compile(r"\[(\d+)\]")
_OPENAI_URL = "https://api.openai.com/v1"  # the openai client's default
_PORTS = {"http": 80, "https": 443}


@dataclass(slots=True)
class Answer:
    """The streamed answer once complete."""

    text: str
    sources: list[Hit]  # what the model was given, numbered [1], [2], ... in this order
    cited: list[Hit] = field(default_factory=list)  # the sources the text cites


def build_context(hits: list[Hit], budget_tokens: int, chunker: Chunker) -> tuple[str, list[Hit]]:
    """Numbered sources, best first, as many as fit in `budget_tokens`."""
    parts: list[str] = []
    used: list[Hit] = []
    spent = 0
    for hit in hits:
        label = f"[{len(used) + 1}] {hit.table} {','.join(hit.key)}"
        part = f"{label}\n{hit.content.strip()}\n"
        cost = chunker.count_tokens(part)
        if spent + cost > budget_tokens:
            continue  # a smaller, lower-ranked source may still fit
        parts.append(part)
        used.append(hit)
        spent += cost
    return "\n".join(parts), used


def cited_sources(text: str, sources: list[Hit]) -> list[Hit]:
    numbers = sorted({int(n) for n in _CITATION.findall(text)})
    return [sources[n - 1] for n in numbers if 1 <= n <= len(sources)]


def _origin(base_url: str | None) -> tuple[str, str, int | None]:
    """The scheme, host and port a request goes to (unset: what the openai client uses)."""
    parts = urlsplit(base_url or os.environ.get("OPENAI_BASE_URL") or _OPENAI_URL)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _PORTS.get(scheme)


def chat_api_key(settings: Settings) -> str:
    """The chat model's key. A key goes only to the host it was configured for: chat.api_key
    to the chat's host; embedding.api_key when the chat talks to the embedding's host
    (chat.base_url unset or the same scheme, host and port); OPENAI_API_KEY to OpenAI's host
    (or OPENAI_BASE_URL's), never to another server named by a base_url."""
    chat, embedding = settings.chat, settings.embedding
    if chat.api_key:  # an empty secret counts as unset
        return chat.api_key.get_secret_value()
    host = _origin(chat.base_url or embedding.base_url)
    if embedding.api_key and host == _origin(embedding.base_url):
        return embedding.api_key.get_secret_value()
    from_env = os.environ.get("OPENAI_API_KEY")
    if from_env and host == _origin(None):
        return from_env
    where = chat.base_url or embedding.base_url or "OpenAI"
    raise ConfigError(
        f"no API key for the chat model at {where}: set chat.api_key (CONNECTOR_CHAT__API_KEY; "
        "any value for a server that needs no key). The embedding key is used only for the "
        "embedding's host, OPENAI_API_KEY only for OpenAI's"
    )


class Answerer:
    """Retrieves with a Searcher and streams answers from the chat model."""

    def __init__(self, settings: Settings, found: Searcher | None = None) -> None:
        self.settings = settings
        self.searcher = found or searcher(settings)
        chat = settings.chat
        base_url = chat.base_url or settings.embedding.base_url
        self.client = openai.OpenAI(
            api_key=chat_api_key(settings), base_url=base_url, timeout=chat.timeout_s
        )
        self._chunker = Chunker(get_encoding(chat.model), 8192, 0)

    def prompt(self, question: str, context: str) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": self.settings.chat.system_prompt},
            {"role": "user", "content": f"Sources:\n{context}\nQuestion: {question}"},
        ]

    def stream(
        self,
        question: str,
        k: int = 5,
        filters: Mapping[str, FilterValue] | None = None,
        min_lsn: Lsn | str | None = None,
        on_token: Callable[[str], None] | None = None,
    ) -> Answer:
        """Retrieve, then stream the answer; `on_token` sees each piece as it arrives."""
        sources, tokens = self.start(question, k, filters, min_lsn)
        pieces: list[str] = []
        for piece in tokens:
            pieces.append(piece)
            if on_token is not None:
                on_token(piece)
        text = "".join(pieces)
        return Answer(text, sources, cited_sources(text, sources))

    def start(
        self,
        question: str,
        k: int = 5,
        filters: Mapping[str, FilterValue] | None = None,
        min_lsn: Lsn | str | None = None,
    ) -> tuple[list[Hit], Iterator[str]]:
        """Retrieve now (bad input and a search failure raise here), and the answer's pieces
        as the chat model streams them; the sources are numbered in this order."""
        hits = self.searcher.search(question, k=k, filters=filters, min_lsn=min_lsn)
        context, sources = build_context(hits, self.settings.chat.max_context_tokens, self._chunker)
        return sources, self._complete(self.prompt(question, context))

    def _complete(self, messages: list[dict[str, str]]) -> Iterator[str]:
        chat = self.settings.chat
        try:
            stream: Any = self.client.chat.completions.create(
                model=chat.model,
                messages=messages,  # type: ignore[arg-type]
                stream=True,
                max_tokens=chat.max_answer_tokens,
                temperature=chat.temperature,
            )
        except openai.AuthenticationError:
            raise ConfigError(
                "the chat server refused the API key: set chat.api_key (CONNECTOR_CHAT__API_KEY)"
            ) from None
        with stream:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content

    def close(self) -> None:
        self.client.close()


def answer(
    question: str,
    k: int = 5,
    filters: Mapping[str, FilterValue] | None = None,
    *,
    settings: Settings | None = None,
    on_token: Callable[[str], None] | None = None,
) -> Answer:
    """Answer `question` from the synced index (settings default: $CONNECTOR_CONFIG)."""
    answerer = Answerer(settings or load_settings())
    try:
        return answerer.stream(question, k, filters, on_token=on_token)
    finally:
        answerer.close()

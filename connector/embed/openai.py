"""The `openai` provider: OpenAI or any OpenAI-compatible server (Azure OpenAI, vLLM, Ollama, TEI).

Frugal and patient with a paid API:
- texts are sent in requests bounded by input count (`batch_size`) and total tokens
  (`max_batch_tokens`), at most `max_concurrency` requests in flight;
- a text over the model's input limit (`max_input_tokens`) is truncated to it, with a warning;
- 429, 5xx, timeouts and connection errors are retried with exponential backoff and jitter,
  waiting what `Retry-After` asks when the server says; after `retry_max_s` the batch gives up
  with `EmbeddingUnavailable`, and the daemon restarts from its checkpoint (nothing confirmed,
  nothing lost) and tries again;
- a 400/422 (the server refuses an input) is narrowed down by halving the request to the texts
  that are refused; those are reported in `EmbeddingRejected` (their rows are dead-lettered) and
  every other text gets its vector;
- 401/403/404 are configuration problems (key, permission, model name): `ConfigError`.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import logging
import threading
import time
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import openai
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_delay

from connector.config import EmbeddingSettings
from connector.core.chunking import Chunker
from connector.embed.base import (
    EmbeddingRejected,
    EmbeddingStats,
    EmbeddingUnavailable,
    vector_to_bytes,
)
from connector.embed.tokenizer import get_encoding
from connector.errors import ConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")

_RETRY_STATUSES = frozenset({408, 409, 429})
_MAX_RETRY_AFTER_S = 120.0


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: rate limits, server errors, timeouts, broken connections."""
    if isinstance(exc, openai.APIConnectionError | openai.APITimeoutError):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code >= 500 or exc.status_code in _RETRY_STATUSES
    return False


def retry_after(exc: BaseException | None) -> float | None:
    """Seconds the server asked us to wait (Retry-After / retry-after-ms), if it did."""
    if not isinstance(exc, openai.APIStatusError):
        return None
    headers = exc.response.headers
    if "retry-after-ms" in headers:
        try:
            return min(float(headers["retry-after-ms"]) / 1000, _MAX_RETRY_AFTER_S)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), _MAX_RETRY_AFTER_S)
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)
        return min(max(when.timestamp() - time.time(), 0.0), _MAX_RETRY_AFTER_S)


class _Backoff:
    """Retry-After when given, else exponential backoff with full jitter (0.5 s .. 30 s)."""

    def __init__(self, stats: EmbeddingStats) -> None:
        self.stats = stats

    def __call__(self, state: RetryCallState) -> float:
        import random

        self.stats.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        asked = retry_after(exc)
        if asked is not None:
            return asked
        ceiling = min(30.0, 0.5 * 2 ** (state.attempt_number - 1))
        return random.uniform(ceiling / 2, ceiling)


class _LoopThread:
    """An event loop in a daemon thread: the async client lives there for the process's life
    (its connection pool survives across batches); sync callers submit coroutines to it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="embedding-io", daemon=True
        )
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class OpenAIEmbedder:
    """Embeds through the official `openai` async client."""

    provider = "openai"

    def __init__(self, settings: EmbeddingSettings) -> None:
        self.settings = settings
        self.model = settings.model
        self.dimensions = settings.dimensions
        self.stats = EmbeddingStats()
        self._chunker = Chunker(get_encoding(settings.model), settings.max_input_tokens, 0)
        self._send_dimensions = (
            settings.request_dimensions
            if settings.request_dimensions is not None
            else settings.model.startswith("text-embedding-3")
        )
        self._io = _LoopThread()
        try:
            self._client = self._io.run(self._make_client())
        except ConfigError:
            self._io.close()
            raise
        self._limit = asyncio.Semaphore(settings.max_concurrency)

    async def _make_client(self) -> openai.AsyncOpenAI:
        key = self.settings.api_key.get_secret_value() if self.settings.api_key else None
        try:
            return openai.AsyncOpenAI(
                api_key=key or None,
                base_url=self.settings.base_url,
                timeout=self.settings.timeout_s,
                max_retries=0,  # retries are ours: Retry-After, jitter, and a bound in time
            )
        except openai.OpenAIError as exc:
            raise ConfigError(
                f"cannot make the embedding client ({exc}): set CONNECTOR_EMBEDDING__API_KEY or "
                "OPENAI_API_KEY (any value for a server that needs no key)"
            ) from None

    def close(self) -> None:
        self._io.run(self._client.close())
        self._io.close()

    # ----------------------------------------------------------------- embed

    def embed(self, texts: Sequence[str]) -> list[bytes]:
        prepared, tokens = self._prepare(texts)
        vectors: list[bytes | None] = [None] * len(prepared)
        errors: dict[int, str] = {}
        self._io.run(self._embed_all(prepared, tokens, vectors, errors))
        self.stats.texts += len(prepared) - len(errors)
        self.stats.tokens += sum(t for i, t in enumerate(tokens) if i not in errors)
        if errors:
            raise EmbeddingRejected(vectors, errors)
        return [v for v in vectors if v is not None]

    def _prepare(self, texts: Sequence[str]) -> tuple[list[str], list[int]]:
        """Truncate over-long texts to the model's input limit; count every text's tokens."""
        limit = self.settings.max_input_tokens
        prepared, tokens, truncated = [], [], 0
        for text in texts:
            count = self._chunker.count_tokens(text)
            if count > limit:
                text, count, truncated = self._chunker.truncate(text, limit), limit, truncated + 1
            prepared.append(text if text else " ")  # the API refuses empty strings
            tokens.append(count)
        if truncated:
            log.warning(
                "truncated %d text(s) to %d tokens, the model's input limit "
                "(embedding.max_input_tokens); lower chunk_tokens to embed all of the text",
                truncated,
                limit,
            )
        return prepared, tokens

    def _batches(self, tokens: list[int]) -> list[list[int]]:
        """Index groups bounded by batch_size inputs and max_batch_tokens tokens."""
        batches: list[list[int]] = []
        current: list[int] = []
        budget = 0
        for i, count in enumerate(tokens):
            if current and (
                len(current) >= self.settings.batch_size
                or budget + count > self.settings.max_batch_tokens
            ):
                batches.append(current)
                current, budget = [], 0
            current.append(i)
            budget += count
        if current:
            batches.append(current)
        return batches

    async def _embed_all(
        self,
        texts: list[str],
        tokens: list[int],
        vectors: list[bytes | None],
        errors: dict[int, str],
    ) -> None:
        await asyncio.gather(
            *(self._embed_batch(batch, texts, vectors, errors) for batch in self._batches(tokens))
        )

    async def _embed_batch(
        self,
        batch: list[int],
        texts: list[str],
        vectors: list[bytes | None],
        errors: dict[int, str],
    ) -> None:
        try:
            result = await self._request([texts[i] for i in batch])
        except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
            if len(batch) == 1:
                errors[batch[0]] = f"the embedding server refused this text: {_message(exc)}"
                self.stats.failures += 1
                return
            middle = len(batch) // 2  # narrow the refusal down to the texts that cause it
            await asyncio.gather(
                self._embed_batch(batch[:middle], texts, vectors, errors),
                self._embed_batch(batch[middle:], texts, vectors, errors),
            )
            return
        for i, vector in zip(batch, result, strict=True):
            vectors[i] = vector

    async def _request(self, inputs: list[str]) -> list[bytes]:
        retrying = AsyncRetrying(
            retry=retry_if_exception(is_transient),
            wait=_Backoff(self.stats),
            stop=stop_after_delay(self.settings.retry_max_s),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._call(inputs)
        except openai.AuthenticationError as exc:
            raise ConfigError(
                f"the embedding server refused the API key ({_message(exc)}): set "
                "CONNECTOR_EMBEDDING__API_KEY (or OPENAI_API_KEY)"
            ) from None
        except (openai.PermissionDeniedError, openai.NotFoundError) as exc:
            raise ConfigError(
                f"the embedding server refused model {self.model!r} ({_message(exc)}): check "
                "embedding.model and embedding.base_url"
            ) from None
        except Exception as exc:
            if is_transient(exc):
                raise EmbeddingUnavailable(
                    f"embedding server {self.settings.base_url or 'api.openai.com'} still failing "
                    f"after {self.settings.retry_max_s:.0f}s: {_message(exc)}"
                ) from exc
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _call(self, inputs: list[str]) -> list[bytes]:
        extra: dict[str, Any] = {"dimensions": self.dimensions} if self._send_dimensions else {}
        async with self._limit:
            self.stats.requests += 1
            response = await self._client.embeddings.create(
                model=self.model, input=inputs, encoding_format="base64", **extra
            )
        data = sorted(response.data, key=lambda item: item.index)
        vectors = [_vector_bytes(item.embedding) for item in data]
        if len(vectors) != len(inputs) or any(len(v) != 4 * self.dimensions for v in vectors):
            got = len(vectors[0]) // 4 if vectors else 0
            raise ConfigError(
                f"model {self.model!r} returned {len(vectors)} vectors of {got} dimensions for "
                f"{len(inputs)} texts; embedding.dimensions is {self.dimensions}: set it to the "
                "model's size (or request_dimensions = true for text-embedding-3 models)"
            )
        return vectors


def _vector_bytes(embedding: object) -> bytes:
    """A vector as Redis stores it. Asked for base64, the server sends the little-endian FLOAT32
    bytes themselves (a third of the JSON, and no float parsing); one that ignores the request
    and sends a list of floats works too."""
    if isinstance(embedding, str):
        return base64.b64decode(embedding)  # little-endian FLOAT32 on the wire, as Redis wants
    return vector_to_bytes(embedding)  # type: ignore[arg-type]


def _message(exc: BaseException) -> str:
    if isinstance(exc, openai.APIStatusError):
        body = exc.body
        if isinstance(body, dict):
            error = body.get("error", body)
            if isinstance(error, dict) and "message" in error:
                return f"{exc.status_code} {error['message']}"
        return f"{exc.status_code} {exc.message}"
    return f"{type(exc).__name__}: {exc}"

"""`connector check`'s probes of the model providers: the embedding model answers one tiny
request with the configured model and dimensions (through the connector's own embedder, so its
refusals name the setting), and the chat model answers one token. Skipped with `--offline`."""

from __future__ import annotations

from connector.config import Settings
from connector.embed import make_embedder
from connector.errors import ConfigError, ConnectorError
from connector.ops.check.report import Finding, Report, error, ok, refusal, skipped

# A probe gives up on a failing provider after this long (the daemon retries for
# embedding.retry_max_s).
_PROBE_RETRY_S = 5.0


def check_providers(settings: Settings, report: Report, offline: bool) -> None:
    if offline:
        report.add(skipped("embedding", "embedding.model", "--offline: the provider not asked"))
        report.add(skipped("chat", "chat.model", "--offline: the provider not asked"))
        return
    report.add(_embedding(settings))
    report.add(_chat(settings))


def _embedding(settings: Settings) -> Finding:
    embedding = settings.embedding
    setting = f"embedding.model ({embedding.provider})"
    value = f"{embedding.model}, {embedding.dimensions} dimensions"
    if embedding.provider == "hashing":
        return ok("embedding", setting, f"hashing, {embedding.dimensions} dimensions",
                  "the built-in hashing embedder: no provider to ask (words, not meaning: for "
                  "tests and trials)")  # fmt: skip
    import openai  # here: `connector run`'s start checks do not ask providers

    probing = embedding.model_copy(
        update={"retry_max_s": min(_PROBE_RETRY_S, embedding.retry_max_s), "cache": False}
    )
    try:
        embedder = make_embedder(probing)
        try:
            vectors = embedder.embed(["connector check"])
        finally:
            embedder.close()
    except ConfigError as exc:
        return refusal("embedding", setting, value, str(exc), "refuse")
    except (ConnectorError, openai.OpenAIError, OSError) as exc:
        return error(
            "embedding",
            setting,
            value,
            f"the provider did not answer: {exc}",
            "check embedding.base_url and that the server runs (the daemon retries "
            "for embedding.retry_max_s, then starts again from its checkpoint)",
        )
    got = len(vectors[0]) // 4 if vectors else 0
    return ok(
        "embedding",
        setting,
        value,
        f"the provider answered a test text with a vector of {got} dimensions",
    )


def _chat(settings: Settings) -> Finding:
    import openai

    from connector.query.answerer import chat_api_key

    chat = settings.chat
    base_url = chat.base_url or settings.embedding.base_url
    value = f"{chat.model} at {base_url or 'api.openai.com'}"
    try:
        key = chat_api_key(settings)
    except ConfigError as exc:
        return skipped("chat", "chat.model", f"no chat key, so `connector ask` is off: {exc}")
    client = openai.OpenAI(api_key=key, base_url=base_url, timeout=min(chat.timeout_s, 30.0),
                           max_retries=0)  # fmt: skip
    try:
        stream = client.chat.completions.create(
            model=chat.model, messages=[{"role": "user", "content": "Say OK."}],
            max_tokens=1, stream=True,
        )  # fmt: skip
        with stream:
            for _chunk in stream:
                pass
    except openai.AuthenticationError:
        return error(
            "chat",
            "chat.api_key",
            value,
            "the chat server refused the API key",
            "set chat.api_key (CONNECTOR_CHAT__API_KEY)",
        )
    except (openai.NotFoundError, openai.PermissionDeniedError) as exc:
        return error(
            "chat",
            "chat.model",
            value,
            f"the chat server refused the model: {exc}",
            "check chat.model and chat.base_url",
        )
    except openai.OpenAIError as exc:
        return error(
            "chat",
            "chat.model",
            value,
            f"the chat server did not answer: {exc}",
            "check chat.base_url and that the server runs",
        )
    finally:
        client.close()
    return ok("chat", "chat.model", value, "the chat model answered a one-token request")

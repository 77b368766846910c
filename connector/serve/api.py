"""The HTTP API: the models that validate requests (and make the OpenAPI document), the routes,
and what each failure becomes.

- `POST /v1/search`: hits with the visible LSN they reflect; `min_lsn` waits (bounded) until the
  index shows a commit (read-your-writes).
- `POST /v1/ask`: Server-Sent Events: `token` events as the chat model streams, then one
  `sources` event (each source marked `cited` or not), then `done` (or one `error`).
- `GET /v1/index`: the index's visible LSN, physical index and lag, for the page.
- `GET /healthz`, `GET /readyz` (Redis reachable, the index present, its model the settings'
  one), `GET /metrics` (Prometheus), `GET /` (the page), `/openapi.json` and `/docs`.

Bad input is a 4xx naming the field and the fix, never a traceback: 422 for the request's
shape and limits, 400 for what only the index can tell (a filter on a field it does not have),
401 without a valid bearer token, 503 when `serve.max_concurrency` requests are in flight,
504 when `min_lsn` is not reached within `serve.min_lsn_timeout_s`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
from collections.abc import Iterator
from importlib import resources
from typing import Annotated

import redis
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connector.config import Settings
from connector.core.lsn import Lsn
from connector.errors import ConnectorError, QueryError
from connector.logs import redact
from connector.query.answerer import Answerer, cited_sources
from connector.query.searcher import FilterValue, Hit, NotCaughtUpError, Searcher, searcher
from connector.sink.checkpoint import read_checkpoint

log = logging.getLogger(__name__)

_LSN = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")
_OPEN = frozenset({"/", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"})
_MEASURED = frozenset({"/v1/search", "/v1/ask", "/v1/index", "/healthz", "/readyz"})


class Range(BaseModel):
    """A numeric filter: `min` <= value <= `max` (either may be left out)."""

    model_config = ConfigDict(extra="forbid")
    min: float | None = None
    max: float | None = None


# Integers stay int (JSON is parsed exactly): a tag written from a bigint column matches at any
# size; bool before int, or JSON true would be the integer 1.
Scalar = str | bool | int | float
Filter = Scalar | list[Scalar] | Range


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, Field(min_length=1, description="the question")]
    k: Annotated[int, Field(ge=1, description="how many hits (at most serve.max_k)")] = 5
    filters: dict[str, Filter] = Field(
        default_factory=dict,
        description="metadata field -> a tag or text value, a list of tags (any of), or a "
        "numeric range {min, max}; a number on a tag field matches the tag written from a column "
        "of that value (integers exactly, at any size)",
    )
    hybrid: bool = Field(False, description="fuse the vector ranking with a BM25 one")
    min_lsn: str | None = Field(
        None, description="wait until the index shows this commit (an LSN such as 0/1A2B3C)"
    )
    index: str | None = Field(None, description="the index name (default: the first one)")

    @field_validator("min_lsn")
    @classmethod
    def _lsn(cls, value: str | None) -> str | None:
        if value is not None and not _LSN.match(value):
            raise ValueError(
                "not an LSN: give it as pg_current_wal_lsn() prints it, e.g. 0/1A2B3C4D"
            )
        return value


class AskRequest(SearchRequest):
    pass


class HitOut(BaseModel):
    table: str
    key: list[str]
    chunk: int
    content: str
    score: float
    metadata: dict[str, str]
    index: str  # the physical index that answered
    cited: bool | None = None  # /v1/ask: whether the answer cites it

    @classmethod
    def of(cls, hit: Hit, cited: bool | None = None) -> HitOut:
        return cls(
            table=hit.table, key=list(hit.key), chunk=hit.chunk, content=hit.content,
            score=hit.score, metadata=hit.metadata, index=hit.index, cited=cited,
        )  # fmt: skip


class SearchResponse(BaseModel):
    hits: list[HitOut]
    lsn: str = Field(description="the visible LSN: every commit up to it is in the answer")


class IndexState(BaseModel):
    index: str
    physical: str
    lsn: str
    lag_seconds: float | None = Field(description="since the last applied commit was made")


class Problem(BaseModel):
    error: str
    field: str | None = None


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("connector_api_requests", "API requests by route and outcome",
                                ["route", "outcome"], registry=self.registry)  # fmt: skip
        self.seconds = Histogram(
            "connector_api_request_seconds", "API request latency by route and outcome",
            ["route", "outcome"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )  # fmt: skip
        self.embedding = Histogram(
            "connector_api_embedding_seconds", "time to embed a question (cache hits included)",
            registry=self.registry,
            buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
        )  # fmt: skip


class _Api:
    """The state behind the routes: settings, searchers, answerers, metrics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = _Metrics()
        self.tokens = [key.get_secret_value().encode() for key in settings.serve.api_keys]
        self.indexes = list(dict.fromkeys(t.index_name for t in settings.tables))

    def searcher(self, index: str | None) -> Searcher:
        if index is not None and index not in self.indexes:
            raise _Refused(422, f"unknown index {index!r} (configured: "
                                f"{', '.join(self.indexes)})", "index")  # fmt: skip
        return searcher(self.settings, index)

    def check(self, body: SearchRequest) -> dict[str, FilterValue]:
        """The limits of the settings (422), and the filters as `search()` takes them."""
        serve = self.settings.serve
        if len(body.text) > serve.max_text_chars:
            limit = serve.max_text_chars
            raise _Refused(422, f"text is {len(body.text)} characters; at most {limit} "
                                "(serve.max_text_chars)", "text")  # fmt: skip
        if body.k > serve.max_k:
            raise _Refused(422, f"k is {body.k}; at most {serve.max_k} (serve.max_k)", "k")
        filters: dict[str, FilterValue] = {}
        for name, value in body.filters.items():
            filters[name] = (value.min, value.max) if isinstance(value, Range) else value
        return filters

    def authorized(self, headers: Headers) -> bool:
        if not self.tokens:
            return True
        scheme, _, token = headers.get("authorization", "").partition(" ")
        given = token.strip().encode()
        valid = any(hmac.compare_digest(given, known) for known in self.tokens)
        return scheme.lower() == "bearer" and valid


class _Refused(Exception):
    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


def _problem(
    status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = Problem(error=message, field=field).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=status, headers=headers)


_RETRY = {"Retry-After": "1"}


def create_app(settings: Settings) -> FastAPI:
    """The API for `settings` (`connector serve` runs it with uvicorn)."""
    api = _Api(settings)
    app = FastAPI(
        title="connector", version="1",
        description="Search and answer over the Redis index the connector keeps in sync.",
    )  # fmt: skip
    app.add_middleware(_Guard, api=api)
    if settings.serve.cors_origins:  # outside the guard: a preflight needs no token
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.serve.cors_origins,
            allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"],
        )  # fmt: skip
    _errors(app)
    _routes(app, api)
    app.state.api = api
    return app


class _Guard:
    """Authentication, the concurrency bound, and the metrics of every request (plain ASGI:
    Starlette's `BaseHTTPMiddleware` costs more than a search)."""

    def __init__(self, app: ASGIApp, api: _Api) -> None:
        self.app = app
        self.api = api
        self.slots = asyncio.Semaphore(api.settings.serve.max_concurrency)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route, started, status = scope["path"], time.perf_counter(), [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        refusal = self._refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, sending)
        else:
            async with self.slots:
                await self.app(scope, receive, sending)
        label = route if route in _MEASURED else "other"  # bounded label values
        self.api.metrics.requests.labels(label, str(status[0])).inc()
        self.api.metrics.seconds.labels(label, str(status[0])).observe(
            time.perf_counter() - started
        )

    def _refusal(self, scope: Scope) -> Response | None:
        route, method = scope["path"], scope["method"]
        if (
            route not in _OPEN
            and method != "OPTIONS"
            and not self.api.authorized(Headers(scope=scope))
        ):
            return _problem(
                401, "missing or wrong bearer token: send Authorization: Bearer <token> "
                "(serve.api_keys)", headers={"WWW-Authenticate": "Bearer"},
            )  # fmt: skip
        if self.slots.locked():
            busy = self.api.settings.serve.max_concurrency
            return _problem(503, f"busy: {busy} requests in flight (serve.max_concurrency); "
                            "retry", headers=_RETRY)  # fmt: skip
        return None


def _errors(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
        return _problem(422, f"{where or 'body'}: {message}", where or None)

    @app.exception_handler(_Refused)
    async def refused(_request: Request, exc: _Refused) -> JSONResponse:
        return _problem(exc.status, exc.message, exc.field)

    @app.exception_handler(QueryError)
    async def bad_query(_request: Request, exc: QueryError) -> JSONResponse:
        return _problem(400, str(exc))

    @app.exception_handler(NotCaughtUpError)
    async def not_caught_up(_request: Request, exc: NotCaughtUpError) -> JSONResponse:
        return _problem(504, str(exc), "min_lsn", _RETRY)

    @app.exception_handler(ConnectorError)
    async def unavailable(_request: Request, exc: ConnectorError) -> JSONResponse:
        return _problem(503, redact(str(exc)))

    @app.exception_handler(redis.RedisError)
    async def redis_down(_request: Request, exc: redis.RedisError) -> JSONResponse:
        log.warning("Redis failed a request: %s", redact(str(exc)))
        return _problem(503, "Redis is not reachable or refused the request; retry")


def _routes(app: FastAPI, api: _Api) -> None:
    timeout = api.settings.serve.min_lsn_timeout_s

    @app.post("/v1/search", responses={400: {"model": Problem}, 422: {"model": Problem},
                                       504: {"model": Problem}})  # fmt: skip
    def search(body: SearchRequest) -> SearchResponse:
        filters = api.check(body)
        found = api.searcher(body.index)
        result = found.search_at(
            body.text, body.k, filters, body.min_lsn, body.hybrid, timeout,
            embedded=api.metrics.embedding.observe,
        )  # fmt: skip
        return SearchResponse(hits=[HitOut.of(h) for h in result.hits], lsn=str(result.lsn))

    @app.post("/v1/ask", response_class=StreamingResponse,
              responses={200: {"content": {"text/event-stream": {}}}})  # fmt: skip
    def ask(body: AskRequest) -> StreamingResponse:
        filters = api.check(body)
        answerer = Answerer(api.settings, api.searcher(body.index))
        try:
            sources, tokens = answerer.start(body.text, body.k, filters, body.min_lsn)
        except Exception:
            answerer.close()
            raise
        return StreamingResponse(_events(answerer, sources, tokens), media_type="text/event-stream")

    @app.get("/v1/index")
    def index(name: str | None = None) -> IndexState:
        found = api.searcher(name)
        spec = found.check_index()
        checkpoint = read_checkpoint(found.client, api.settings.postgres.slot)
        lag = lsn = None
        if checkpoint is not None:
            lag = round(time.time() - (checkpoint.commit_time or checkpoint.updated_at), 3)
            lsn = checkpoint.visible
        return IndexState(index=spec.name, physical=spec.physical_name,
                          lsn=str(lsn or Lsn(0)), lag_seconds=lag)  # fmt: skip

    _probes(app, api)


def _probes(app: FastAPI, api: _Api) -> None:
    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        try:
            for name in api.indexes:
                found = api.searcher(name)
                found.client.ping()
                found.check_index()
        except (ConnectorError, redis.RedisError) as exc:
            return _problem(503, f"not ready: {redact(str(exc))}")
        return JSONResponse({"status": "ready", "indexes": api.indexes})

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(api.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(resources.files("connector.serve").joinpath("page.html").read_text())


def _events(answerer: Answerer, sources: list[Hit], tokens: Iterator[str]) -> Iterator[str]:
    """The answer as Server-Sent Events (run by Starlette in a worker thread)."""
    pieces: list[str] = []
    try:
        for piece in tokens:
            pieces.append(piece)
            yield _event("token", piece)
        cited = cited_sources("".join(pieces), sources)
        marked = [HitOut.of(h, any(h is c for c in cited)).model_dump() for h in sources]
        yield _event("sources", json.dumps(marked))
        yield _event("done", "")
    except ConnectorError as exc:
        yield _event("error", redact(str(exc)))
    except Exception:  # the stream has begun: the status is sent; say so in it
        log.exception("the answer stream failed")
        yield _event("error", "the answer failed; see the server's log")
    finally:
        answerer.close()


def _event(name: str, data: str) -> str:
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {name}\n{lines}\n"

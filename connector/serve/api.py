"""The HTTP API: the routes, the guard every request passes, and what each failure becomes (the
request model: serve.requests; the response models and the event stream: serve.responses).

- `POST /v1/search`: hits with the visible LSN they reflect; `min_lsn` waits (bounded) until the
  index shows a commit (read-your-writes).
- `POST /v1/ask`: Server-Sent Events: `token` events as the chat model streams, then one
  `sources` event (each source marked `cited` or not), then `done` (or one `error`).
- `GET /v1/index`: the index's visible LSN, physical index and lag, for the page.
- `GET /healthz`, `GET /readyz` (Redis reachable, the index present, its model the settings'
  one), `GET /metrics` (Prometheus), `GET /` (the page), `/openapi.json` and `/docs`.

Bad input is a 4xx `{"error", "field"}` naming the field and the limit, never a traceback nor
a 5xx (serve.requests makes the request model from the settings: the OpenAPI document declares
what the server enforces): 400 for a body that is not JSON and for what the index's fields say
(a filter on a field it does not have, a range on a tag field), 413 past
`serve.max_body_bytes`, 415 without JSON's Content-Type, 422 for the request's shape, types and
limits, 401 without a valid bearer token, 503 when `serve.max_concurrency` requests are in
flight, 504 when `min_lsn` is not reached within `serve.min_lsn_timeout_s`.

The probes never wait behind slow work: `/healthz` and `/metrics` run on the event loop,
`/readyz` on threads of its own, none takes a `serve.max_concurrency` slot; searches, answers
and `min_lsn` waits run on the worker threads, one per admitted request.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from importlib import resources
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import redis
from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connector.config import ServeSettings, Settings
from connector.errors import ConnectorError, QueryError
from connector.logs import redact
from connector.query.answerer import Answerer
from connector.query.searcher import NotCaughtUpError, Searcher, searcher
from connector.serve.requests import Asked, Refused, RequestModel, request_model
from connector.serve.responses import (
    EVENT,
    REFUSALS,
    RETRY,
    Health,
    HitOut,
    IndexState,
    Problem,
    SearchResponse,
    events,
    index_state,
    problem,
)
from connector.sink.engine import read_profile

if TYPE_CHECKING:  # the mcp extra
    from connector.serve.mcp import McpEndpoint

log = logging.getLogger(__name__)

_OPEN = frozenset({"/", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"})
_PROBES = frozenset({"/healthz", "/readyz", "/metrics"})  # never wait for a slot
_MEASURED = frozenset({"/v1/search", "/v1/ask", "/v1/index", "/mcp", "/healthz", "/readyz"})


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
        self.requests: RequestModel = request_model(settings)
        self._probe_threads: anyio.CapacityLimiter | None = None

    def searcher(self, index: str | None, field: str = "index") -> Searcher:
        if index is not None and index not in self.indexes:
            raise Refused(422, f"{field}: unknown index {index[:100]!r} (configured: "
                               f"{', '.join(self.indexes)})", field)  # fmt: skip
        return searcher(self.settings, index)

    @property
    def probe_threads(self) -> anyio.CapacityLimiter:
        """Threads of /readyz's own (made in the event loop): a probe never queues behind the
        worker threads that searches and answers hold."""
        if self._probe_threads is None:
            self._probe_threads = anyio.CapacityLimiter(2)
        return self._probe_threads

    def authorized(self, headers: Headers) -> bool:
        if not self.tokens:
            return True
        scheme, _, token = headers.get("authorization", "").partition(" ")
        given = token.strip().encode()
        valid = any(hmac.compare_digest(given, known) for known in self.tokens)
        return scheme.lower() == "bearer" and valid


def create_app(settings: Settings) -> FastAPI:
    """The API for `settings` (`connector serve` runs it with uvicorn)."""
    api = _Api(settings)
    mcp = _mcp(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # A worker thread for every admitted request (anyio's default is 40).
        threads = anyio.to_thread.current_default_thread_limiter()
        threads.total_tokens = max(threads.total_tokens, settings.serve.max_concurrency)
        async with mcp.running() if mcp else nullcontext():
            yield

    app = FastAPI(
        title="connector", version="1", lifespan=lifespan,
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
    _declare(app, api)
    if mcp is not None:  # behind the guard: the bearer tokens, the concurrency bound
        app.router.routes.append(Route("/mcp", mcp, methods=["POST"], include_in_schema=False))
    app.state.api = api
    return app


def _mcp(settings: Settings) -> McpEndpoint | None:
    """`POST /mcp` (serve.mcp) when the mcp extra is installed."""
    try:
        from connector.serve.mcp import McpEndpoint
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "mcp":
            raise
        log.info("no /mcp: the MCP server needs pip install 'pg-redis-connector[mcp]'")
        return None
    return McpEndpoint(settings)


def _declare(app: FastAPI, api: _Api) -> None:
    """The OpenAPI document with the request model of the settings (the routes read their
    bodies themselves: FastAPI's parsing takes NaN and says nothing of the Content-Type)."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)  # fmt: skip
            body = api.requests.model.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(body.pop("$defs", {}))
            schemas["SearchRequest"] = body
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]


def _request_body(serve: ServeSettings) -> dict[str, Any]:
    """The OpenAPI requestBody of /v1/search and /v1/ask (its schema: `_declare`)."""
    schema = {"$ref": "#/components/schemas/SearchRequest"}
    return {
        "requestBody": {
            "required": True,
            "description": "JSON (Content-Type: application/json, UTF-8), at most "
            f"{serve.max_body_bytes} bytes (serve.max_body_bytes)",
            "content": {"application/json": {"schema": schema}},
        }
    }


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
        elif route in _PROBES:  # cheap, and must answer whatever else is in flight
            await self.app(scope, receive, sending)
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
            return problem(
                401, "missing or wrong bearer token: send Authorization: Bearer <token> "
                "(serve.api_keys)", headers={"WWW-Authenticate": "Bearer"},
            )  # fmt: skip
        if self.slots.locked() and route not in _PROBES:
            busy = self.api.settings.serve.max_concurrency
            return problem(503, f"busy: {busy} requests in flight (serve.max_concurrency); "
                            "retry", headers=RETRY)  # fmt: skip
        return None


def _errors(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ())[1:])  # ("query", "name")
        message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
        return problem(422, f"{where or 'request'}: {message}", where or None)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        # Starlette's own: no such route (404), method (405).
        return problem(exc.status_code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(Refused)
    async def refused(_request: Request, exc: Refused) -> JSONResponse:
        return problem(exc.status, exc.message, exc.field)

    @app.exception_handler(QueryError)
    async def bad_query(_request: Request, exc: QueryError) -> JSONResponse:
        return problem(400, str(exc))

    @app.exception_handler(NotCaughtUpError)
    async def not_caught_up(_request: Request, exc: NotCaughtUpError) -> JSONResponse:
        return problem(504, str(exc), "min_lsn", RETRY)

    @app.exception_handler(ConnectorError)
    async def unavailable(_request: Request, exc: ConnectorError) -> JSONResponse:
        return problem(503, redact(str(exc)))

    @app.exception_handler(redis.RedisError)
    async def redis_down(_request: Request, exc: redis.RedisError) -> JSONResponse:
        log.warning("Redis failed a request: %s", redact(str(exc)))
        return problem(503, "Redis is not reachable or refused the request; retry")


def _routes(app: FastAPI, api: _Api) -> None:
    timeout = api.settings.serve.min_lsn_timeout_s
    body = _request_body(api.settings.serve)

    def found(asked: Asked) -> Response:
        result = api.searcher(asked.index).search_at(
            asked.text, asked.k, asked.filters, asked.min_lsn, hybrid=asked.hybrid,
            timeout_s=timeout, embedded=api.metrics.embedding.observe,
        )  # fmt: skip
        hits = SearchResponse(hits=[HitOut.of(h) for h in result.hits], lsn=str(result.lsn))
        # Encoded here, on the worker thread, by pydantic-core: returned as a model, FastAPI
        # would validate it again and encode it with json.dumps on the event loop.
        return Response(hits.model_dump_json(), media_type="application/json")

    @app.post("/v1/search", response_model=SearchResponse, openapi_extra=body, responses=REFUSALS)
    async def search(request: Request) -> Response:
        asked = await api.requests.read(request)
        return await run_in_threadpool(found, asked)

    def answer(asked: Asked) -> StreamingResponse:
        answerer = Answerer(api.settings, api.searcher(asked.index))
        try:
            sources, tokens = answerer.start(asked.text, asked.k, asked.filters, asked.min_lsn)
        except Exception:
            answerer.close()
            raise
        return StreamingResponse(events(answerer, sources, tokens), media_type="text/event-stream")

    @app.post("/v1/ask", response_class=StreamingResponse, openapi_extra=body,
              responses={200: {"content": {"text/event-stream": {"schema": EVENT}},
                               "description": "Server-Sent Events: token..., sources, done "
                                              "(or error)"}, **REFUSALS})  # fmt: skip
    async def ask(request: Request) -> StreamingResponse:
        asked = await api.requests.read(request)
        return await run_in_threadpool(answer, asked)

    names = Query(None, description="the index (default: the first)",
                  json_schema_extra={"enum": api.indexes})  # fmt: skip

    @app.get("/v1/index", responses={422: REFUSALS[422]})
    def index(name: str | None = names) -> IndexState:
        return index_state(api.searcher(name, "name"), api.settings.postgres.slot)

    _probes(app, api)


def _probes(app: FastAPI, api: _Api) -> None:
    # The probes never take a worker thread (see the module's docstring).
    @app.get("/healthz")
    async def healthz() -> Health:
        return Health(status="ok")

    def ready() -> JSONResponse:
        try:
            for name in api.indexes:
                found = api.searcher(name)
                found.client.ping()
                found.check_index()
            engine = read_profile(found.client).as_dict()  # the server's versions (core.engine)
        except (ConnectorError, redis.RedisError) as exc:
            return problem(503, f"not ready: {redact(str(exc))}")
        return JSONResponse({"status": "ready", "indexes": api.indexes, "engine": engine})

    not_ready = {"model": Problem, "description": "not ready, and why"}

    @app.get("/readyz", responses={200: {"content": {"application/json": {}}}, 503: not_ready})
    async def readyz() -> JSONResponse:
        return await anyio.to_thread.run_sync(ready, limiter=api.probe_threads)

    text = {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus"}

    @app.get("/metrics", response_class=Response, responses={200: text})
    async def metrics() -> Response:
        return Response(generate_latest(api.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(resources.files("connector.serve").joinpath("page.html").read_text())

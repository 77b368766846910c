"""The MCP server over the synced index (the official MCP Python SDK, the `mcp` extra): the
HTTP API's searches and answers as tools an AI agent calls, with the index's freshness in
every answer.

- `connector mcp` serves it over stdio (what a desktop agent launches; the log goes to stderr,
  stdout is the protocol's).
- `connector serve` mounts it at `POST /mcp` (streamable HTTP, stateless: each request stands
  alone), behind the API's bearer tokens, `serve.max_concurrency` and `serve.max_body_bytes`;
  a browser's request from an origin other than loopback or `serve.cors_origins` is refused.

The tools: `search` (POST /v1/search's request: text, k, filters, hybrid, min_lsn, index),
`ask` (listed when a chat model can be called: the answer with its sources, each marked cited
or not; the answer's pieces are sent as progress notifications to a client that asks for
them) and `index_status` (which index answers, its visible LSN, the age of the last commit it
applied, its rows, chunks and model). Their arguments are read by the API's request model
(serve.requests): the input schemas declare its limits, and a bad argument is a tool error
(`isError`) naming the field, as the API's 4xx is; so is a `min_lsn` not reached within
`serve.min_lsn_timeout_s`, or Redis out of reach. The server never stops over a call.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.from_thread
import anyio.to_thread
import redis
from mcp import MCPError
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.types import (
    INVALID_PARAMS,
    CallToolRequestParams,
    CallToolResult,
    ListToolsResult,
    PaginatedRequestParams,
    TextContent,
    Tool,
    ToolAnnotations,
)
from pydantic import BaseModel, Field
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from connector.config import Settings
from connector.core.lsn import Lsn
from connector.errors import ConfigError, ConnectorError, NotCaughtUpError
from connector.logs import redact
from connector.query.answerer import Answerer, chat_api_key
from connector.query.searcher import close_searchers, searcher
from connector.query.visibility import visibility_clause
from connector.serve.requests import Asked, Refused, RequestModel, request_model
from connector.serve.responses import (
    HitOut,
    IndexState,
    SearchResponse,
    index_state,
    marked_sources,
    problem,
)
from connector.sink.redis_client import command, search_total
from connector.sink.schema import read_meta

log = logging.getLogger(__name__)

_INSTRUCTIONS = (
    "Search and answer over a Redis index that a connector keeps in sync with PostgreSQL. "
    "Every search answers at a visible LSN: every commit up to it is in the answer. To read "
    "a write your application just committed, pass its commit LSN (SELECT "
    "pg_current_wal_lsn() after the commit) as min_lsn."
)
_READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class AskResult(BaseModel):
    answer: str
    sources: list[HitOut] = Field(description="what the chat model was given, [1] first; "
                                  "`cited`: whether the answer cites it")  # fmt: skip


class IndexStatus(IndexState):
    model: str = Field(description="provider/model (dimensions) the index was built with")
    chunks: int = Field(description="documents in the index, every version it keeps")
    rows: int = Field(description="rows at the visible LSN (about: a row changed within "
                      "the garbage collection's grace period counts once per version)")  # fmt: skip


class Tools:
    """The tools of one settings: what they are (`listed`) and a call of each (`call`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.requests: RequestModel = request_model(settings)
        self.chat_problem = _chat_problem(settings)
        self.listed = _tools(self.requests, answers=self.chat_problem is None)

    async def call(
        self, ctx: ServerRequestContext[Any], params: CallToolRequestParams
    ) -> CallToolResult:
        """The tool's result, or a tool error saying what to fix (a name that is no tool is
        a protocol error)."""
        run: Callable[[dict[str, Any], Callable[[str], None]], BaseModel] | None
        run = {"search": self.search, "ask": self.ask, "index_status": self.index_status}.get(
            params.name
        )
        if run is None:
            names = ", ".join(tool.name for tool in self.listed)
            raise MCPError(INVALID_PARAMS, f"no tool {params.name[:100]!r} (the tools: {names})")
        arguments = params.arguments or {}
        count = [0]

        def report(piece: str) -> None:  # from the worker thread: a progress notification
            count[0] += 1
            anyio.from_thread.run(ctx.session.report_progress, count[0], None, piece)

        try:
            found = await anyio.to_thread.run_sync(run, arguments, report)
        except Exception as exc:  # a failure is the call's, never the server's
            return _failed(params.name, exc)
        structured = found.model_dump(mode="json")
        text = json.dumps(structured, ensure_ascii=False)
        return CallToolResult(content=[TextContent(type="text", text=text)],
                              structured_content=structured)  # fmt: skip

    def search(self, arguments: dict[str, Any], _report: Callable[[str], None]) -> BaseModel:
        asked = self._asked(arguments)
        result = searcher(self.settings, asked.index).search_at(
            asked.text, asked.k, asked.filters, asked.min_lsn, hybrid=asked.hybrid,
            timeout_s=self.settings.serve.min_lsn_timeout_s,
        )  # fmt: skip
        return SearchResponse(hits=[HitOut.of(hit) for hit in result.hits], lsn=str(result.lsn))

    def ask(self, arguments: dict[str, Any], report: Callable[[str], None]) -> BaseModel:
        if self.chat_problem is not None:
            raise ConfigError(f"ask: {self.chat_problem}")
        if "hybrid" in arguments:
            raise Refused(422, "hybrid: not an argument of ask (its search is by vector)",
                          "hybrid")  # fmt: skip
        asked = self._asked(arguments)
        answerer = Answerer(self.settings, searcher(self.settings, asked.index))
        pieces: list[str] = []
        try:
            sources, tokens = answerer.start(asked.text, asked.k, asked.filters, asked.min_lsn)
            for piece in tokens:
                pieces.append(piece)
                report(piece)
        finally:
            answerer.close()
        answer = "".join(pieces)
        return AskResult(answer=answer, sources=marked_sources(answer, sources))

    def index_status(self, arguments: dict[str, Any], _report: Callable[[str], None]) -> BaseModel:
        extra = sorted(set(arguments) - {"index"})
        if extra:
            raise Refused(422, f"{extra[0]}: not an argument of index_status (index)", extra[0])
        index = arguments.get("index")
        if index is not None and index not in self.requests.indexes:
            configured = ", ".join(self.requests.indexes)
            raise Refused(422, f"index: unknown index {str(index)[:100]!r} (configured: "
                               f"{configured})", "index")  # fmt: skip
        found = searcher(self.settings, index)
        state = index_state(found, self.settings.postgres.slot)
        spec = found.spec
        meta = read_meta(found.client, spec)
        info = command(found.client, "FT.INFO", spec.name)
        chunks = int(info.get(b"num_docs", 0)) if isinstance(info, dict) else 0
        rows = search_total(command(
            found.client, "FT.SEARCH", spec.name,
            f"@chunk:[0 0] {visibility_clause(Lsn.parse(state.lsn))}",
            "LIMIT", "0", "0", "DIALECT", "2",
        ))  # fmt: skip
        model = f"{meta.get('provider')}/{meta.get('model')} ({meta.get('dimensions')} dimensions)"
        return IndexStatus(**state.model_dump(), model=model, chunks=chunks, rows=rows)

    def _asked(self, arguments: dict[str, Any]) -> Asked:
        """The arguments read as a body of POST /v1/search is: the same model, limits and
        refusals."""
        try:
            raw = json.dumps(arguments, allow_nan=False)
        except ValueError:
            raise Refused(422, "arguments: a number is finite (no NaN or Infinity)",
                          "arguments") from None  # fmt: skip
        limit = self.settings.serve.max_body_bytes
        if len(raw.encode()) > limit:
            raise Refused(413, f"arguments: over {limit} bytes as JSON (serve.max_body_bytes)",
                          "arguments")  # fmt: skip
        return self.requests.parse(raw)


def _failed(tool: str, exc: Exception) -> CallToolResult:
    """A tool error: what went wrong and what to do, as the HTTP API says it."""
    field: str | None = None
    if isinstance(exc, Refused):
        message, field = exc.message, exc.field
    elif isinstance(exc, NotCaughtUpError):
        message, field = f"min_lsn: {exc}", "min_lsn"
    elif isinstance(exc, ConnectorError):
        message = redact(str(exc))
    elif isinstance(exc, redis.RedisError):
        log.warning("Redis failed an MCP call of %s: %s", tool, redact(str(exc)))
        message = "Redis is not reachable or refused the request; retry"
    else:
        log.exception("the MCP tool %s failed", tool)
        message = f"{tool} failed; see the server's log"
    structured = {"error": message, **({"field": field} if field else {})}
    return CallToolResult(content=[TextContent(type="text", text=message)],
                          structured_content=structured, is_error=True)  # fmt: skip


def _chat_problem(settings: Settings) -> str | None:
    """Why no chat model can be called (no key for its host), or None."""
    try:
        chat_api_key(settings)
    except ConfigError as exc:
        return str(exc)
    return None


def _tools(requests: RequestModel, answers: bool) -> list[Tool]:
    """The tools, their input schemas the request model's (its limits, filter fields and
    index names), their output schemas the results'."""
    search_input = requests.model.model_json_schema()
    search_input.pop("title", None)
    ask_input = copy.deepcopy(search_input)
    ask_input["properties"].pop("hybrid")
    ask_input["properties"]["text"]["description"] = "the question"
    status_input: dict[str, Any] = {
        "type": "object",
        "properties": {"index": {"enum": list(requests.indexes),
                                 "description": "the index (default: the first)"}},
        "additionalProperties": False,
    }  # fmt: skip
    tools = [
        Tool(name="search", title="Search the synced index", input_schema=search_input,
             output_schema=SearchResponse.model_json_schema(), annotations=_READ_ONLY,
             description="The k chunks nearest the text (hybrid: fused with a BM25 ranking), "
             "with the visible LSN they reflect; filters on the metadata fields; min_lsn "
             "waits until the index shows that commit (read your writes)."),
        Tool(name="index_status", title="The index's freshness", input_schema=status_input,
             output_schema=IndexStatus.model_json_schema(), annotations=_READ_ONLY,
             description="Which index answers, its visible LSN (every commit up to it is "
             "searchable), the seconds since the last commit it applied was made (it grows "
             "while the database is idle), its rows, chunks and embedding model."),
    ]  # fmt: skip
    if answers:
        tools.insert(1, Tool(
            name="ask", title="Answer from the synced index", input_schema=ask_input,
            output_schema=AskResult.model_json_schema(), annotations=_READ_ONLY,
            description="An answer from the chat model over the k best chunks, citing them "
            "as [n]; with the sources it was given, each marked cited or not. The answer's "
            "pieces come as progress notifications while it is written.",
        ))  # fmt: skip
    return tools


def make_server(settings: Settings) -> Server[Any]:
    """The MCP server of `settings` (the same for stdio and /mcp)."""
    from connector import __version__

    tools = Tools(settings)

    async def list_tools(
        _ctx: ServerRequestContext[Any], _params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        return ListToolsResult(tools=tools.listed)

    return Server("connector", version=__version__, instructions=_INSTRUCTIONS,
                  on_list_tools=list_tools, on_call_tool=tools.call)  # fmt: skip


def serve_stdio(settings: Settings) -> None:
    """Serve MCP on stdin/stdout until the client closes stdin."""

    async def serve() -> None:
        server = make_server(settings)
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

    try:
        anyio.run(serve)
    finally:
        close_searchers()


class McpEndpoint:
    """`POST /mcp` on `connector serve` (an ASGI app; `running` is entered by the API's
    lifespan). Authentication and the concurrency bound are the API's guard's."""

    def __init__(self, settings: Settings) -> None:
        self.server = make_server(settings)
        self.serve = settings.serve
        self._manager: StreamableHTTPSessionManager | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """A session manager for this run of the app (one cannot run twice)."""
        manager = StreamableHTTPSessionManager(
            self.server, stateless=True, max_request_body_size=self.serve.max_body_bytes
        )
        async with manager.run():
            self._manager = manager
            try:
                yield
            finally:
                self._manager = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = Headers(scope=scope).get("origin")
        if origin is not None and not _origin_allowed(origin, self.serve.cors_origins):
            refused = problem(403, f"origin {origin[:100]!r} may not call /mcp: add it to "
                              "serve.cors_origins", "origin")  # fmt: skip
            await refused(scope, receive, send)
        elif self._manager is None:
            await problem(503, "the MCP endpoint is not running; retry")(scope, receive, send)
        else:
            await self._manager.handle_request(scope, receive, send)


def _origin_allowed(origin: str, allowed: list[str]) -> bool:
    """A browser's page may call /mcp from loopback or `serve.cors_origins` only: a page
    elsewhere (DNS rebinding) is refused, as the MCP specification asks of a server."""
    loopback = urlsplit(origin).hostname in _LOOPBACK
    return loopback or "*" in allowed or origin in allowed

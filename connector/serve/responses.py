"""What the API answers: the response models (and so the OpenAPI document's), the one shape of
every refusal (`problem`, `{"error", "field"}`) with the refusals each route declares, and
/v1/ask's Server-Sent Events."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from connector.core.lsn import Lsn
from connector.errors import ConnectorError
from connector.logs import redact
from connector.query.answerer import Answerer, cited_sources
from connector.query.searcher import Hit, Searcher
from connector.sink.checkpoint import read_checkpoint

log = logging.getLogger("connector.serve.api")  # the API's log, whichever module writes it


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
    """Every refusal: what is wrong (the field, the limit and its setting) and the field."""

    error: str
    field: str | None = None


class Health(BaseModel):
    status: str


def problem(
    status: int, message: str, field: str | None = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = Problem(error=message, field=field).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=status, headers=headers)


RETRY = {"Retry-After": "1"}
# One event of /v1/ask's stream (OpenAPI 3.1: the schema of an event stream is an event's).
EVENT = {
    "type": "object",
    "properties": {
        "event": {"enum": ["token", "sources", "done", "error"]},
        "data": {"type": "string", "description": "sources: a JSON list of hits"},
    },
    "required": ["event", "data"],
}
REFUSALS: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "description": description}
    for status, description in [
        (400, "not JSON; a filter on a field the index does not have, or a range on a tag field"),
        (413, "a body over serve.max_body_bytes"),
        (415, "no JSON Content-Type, or a charset other than UTF-8"),
        (422, "the request's shape, types or limits"),
        (503, "serve.max_concurrency requests in flight: retry after Retry-After"),
        (504, "min_lsn not reached within serve.min_lsn_timeout_s"),
    ]
}


def marked_sources(answer: str, sources: list[Hit]) -> list[HitOut]:
    """The sources an answer was given, each marked `cited` or not by its text."""
    cited = cited_sources(answer, sources)
    return [HitOut.of(hit, any(hit is c for c in cited)) for hit in sources]


def index_state(found: Searcher, slot: str) -> IndexState:
    """Which index the alias points at, its visible LSN and the age of the last commit it
    applied (`GET /v1/index`, the MCP tool `index_status`)."""
    spec = found.check_index()
    checkpoint = read_checkpoint(found.client, slot)
    lag = lsn = None
    if checkpoint is not None:
        lag = round(time.time() - (checkpoint.commit_time or checkpoint.updated_at), 3)
        lsn = checkpoint.visible
    return IndexState(index=spec.name, physical=spec.physical_name, lsn=str(lsn or Lsn(0)),
                      lag_seconds=lag)  # fmt: skip


def events(answerer: Answerer, sources: list[Hit], tokens: Iterator[str]) -> Iterator[str]:
    """The answer as Server-Sent Events (run by Starlette in a worker thread)."""
    pieces: list[str] = []
    try:
        for piece in tokens:
            pieces.append(piece)
            yield _event("token", piece)
        marked = [hit.model_dump() for hit in marked_sources("".join(pieces), sources)]
        yield _event("sources", json.dumps(marked))
        yield _event("done", "")
    except ConnectorError as exc:
        yield _event("error", redact(str(exc)))
    except Exception:  # the stream has begun: the status is sent; say so in it
        log.exception("the answer stream failed")
        yield _event("error", "the answer failed; see the server's log")
    finally:
        answerer.close()


_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # each ends a line in an event stream


def _event(name: str, data: str) -> str:
    lines = "".join(f"data: {line}\n" for line in _LINE_BREAK.split(data))
    return f"event: {name}\n{lines}\n"

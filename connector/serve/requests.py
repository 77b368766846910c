"""What the API takes, made from the settings: the request model (strict JSON types, the
limits of `[serve]`, each metadata field of the indexes with the values its kind takes, the
index names), read from a body of at most `serve.max_body_bytes`, and the one way a bad request
is refused (`Refused`, answered as `{"error", "field"}`).

The model is the OpenAPI document's request schema too, so the document declares every limit
the server enforces, and the server takes exactly what the document allows (schemathesis
checks both ways in tests/bounds/test_api_schema.py). The body is parsed by pydantic from
bytes: UTF-8 only, no NaN or Infinity, integers exact at any size, nesting bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError
from starlette.requests import Request

from connector.config import ServeSettings, Settings
from connector.core.fulltext import words
from connector.query.searcher import FilterValue
from connector.sink.schema import index_specs

LSN_PATTERN = r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$"
_STRICT = ConfigDict(extra="forbid", strict=True, regex_engine="python-re")
# The index holds doubles: a number is at most 1e308 either way (a round bound, read alike as a
# float and as a decimal, so an integer just past it is refused as the document says).
_NUMBER_MAX = 1e308


def _float_range(value: object) -> object:
    """An integer past the float range is refused before it is rounded into it."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**308:
        raise PydanticCustomError("finite_number", "a number is at most 1e308 either way")
    return value


Number = Annotated[
    float,
    Field(allow_inf_nan=False, ge=-_NUMBER_MAX, le=_NUMBER_MAX),
    BeforeValidator(_float_range),
]
_FIELDS = "text, k, filters, hybrid, min_lsn, index"
# What a filter of each kind takes, said when a value is none of it.
_KIND_TAKES = {
    "tag": "a tag field takes a value (a string, an integer, a number or a boolean) or a "
    "non-empty list of them (any of)",
    "numeric": 'a numeric field takes a number or a range {"min": ..., "max": ...}',
    "text": "a text field takes a string of words",
}
_PATTERN_SAYS = {
    "min_lsn": "not an LSN: give it as pg_current_wal_lsn() prints it, e.g. 0/1A2B3C4D",
    "tag": "a tag value needs a character other than spaces",
    "text": "no words to match",
}


class Refused(Exception):
    """A request refused: the status, the message (naming the field and the limit) and the
    field."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


class Range(BaseModel):
    """A numeric filter: `min` <= value <= `max` (either may be left out)."""

    model_config = _STRICT
    min: Number | None = None
    max: Number | None = None


@dataclass(frozen=True, slots=True)
class Asked:
    """A request body, validated: what `Searcher.search_at` takes."""

    text: str
    k: int
    filters: dict[str, FilterValue]
    hybrid: bool
    min_lsn: str | None
    index: str | None


@dataclass(frozen=True, slots=True)
class RequestModel:
    """The request model of one app's settings, and how to read a body with it."""

    model: type[BaseModel]
    fields: dict[str, str]  # filter name -> kind (tag | numeric | text), over every index
    indexes: tuple[str, ...]
    serve: ServeSettings

    async def read(self, request: Request) -> Asked:
        """The request's body, validated (raises Refused: 413, 415, 400 or 422)."""
        _check_content_type(request.headers.get("content-type"))
        return self.parse(await _body(request, self.serve.max_body_bytes))

    def parse(self, raw: bytes | str) -> Asked:
        """A body, validated (raises Refused: 400 or 422); `read` and the MCP tools parse with
        it."""
        try:
            body: Any = self.model.model_validate_json(raw)
        except ValidationError as exc:
            raise self._refusal(exc.errors(include_url=False)) from None
        filters: BaseModel = body.filters
        chosen: dict[str, FilterValue] = {}
        for attr, info in type(filters).model_fields.items():
            value = getattr(filters, attr)
            if value is not None:  # null: no filter on that field
                chosen[info.alias or attr] = (
                    (value.min, value.max) if isinstance(value, Range) else value
                )
        return Asked(body.text, body.k, chosen, body.hybrid, body.min_lsn, body.index)

    def _refusal(self, errors: list[ErrorDetails]) -> Refused:
        """One refusal for pydantic's errors: the first that is not "another member of a union
        would have been of the right type" (a union of the kinds of a filter lists one error
        per member)."""
        first = errors[0]
        if first["type"] == "json_invalid":
            error = first.get("ctx", {}).get("error", "")
            return Refused(400, f"the body is not JSON that can be read ({error}): send UTF-8 "
                                "JSON, nested less than 200 deep", "body")  # fmt: skip
        loc = [str(part) for part in first["loc"]]
        if not loc:
            return Refused(422, "the body must be a JSON object with the fields " + _FIELDS, "body")
        if loc[0] != "filters" or len(loc) < 2:
            return Refused(422, f"{loc[0]}: {self._message(loc[0], first)}", loc[0])
        name = loc[1]
        where = f"filters.{name}"
        if first["type"] == "extra_forbidden":
            known = ", ".join(sorted(self.fields)) or "none"
            return Refused(400, f"{where}: unknown filter field {name!r} (metadata fields: "
                                f"{known})", where)  # fmt: skip
        mine = [e for e in errors if tuple(e["loc"][:2]) == ("filters", name)]
        chosen = next((e for e in mine if not e["type"].endswith("_type")), None)
        if chosen is None:
            return Refused(422, f"{where}: {_KIND_TAKES[self.fields[name]]}", where)
        status = 400 if chosen["type"] == "filter_kind" else 422  # what the index's kind says
        return Refused(status, f"{where}: {self._message(self.fields[name], chosen)}", where)

    def _message(self, subject: str, error: ErrorDetails) -> str:
        """pydantic's message, with the setting behind a limit or the format a pattern asks."""
        kind, message = error["type"], error["msg"].removeprefix("Value error, ")
        if kind == "string_pattern_mismatch":
            return _PATTERN_SAYS.get(subject, message)
        if kind == "extra_forbidden":
            return (
                'a range takes "min" and "max"' if subject == "numeric"
                else f"not a field of the request ({_FIELDS})"
            )  # fmt: skip
        if kind in ("less_than_equal", "greater_than_equal") and subject != "k":
            return "a number is at most 1e308 either way"
        if kind == "literal_error":
            return f"unknown index (configured: {', '.join(self.indexes)})"
        setting = {
            ("text", "string_too_long"): "serve.max_text_chars",
            ("k", "less_than_equal"): "serve.max_k",
            ("tag", "too_long"): "serve.max_filter_values",
        }.get((subject, kind))
        return f"{message} ({setting})" if setting else message


async def _body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past `limit` bytes (before reading it when it says so)."""
    too_big = Refused(413, f"the body is over {limit} bytes (serve.max_body_bytes)", "body")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def _check_content_type(header: str | None) -> None:
    send = "send the body as JSON with Content-Type: application/json"
    if not header:
        raise Refused(415, f"no Content-Type: {send}", "body")
    media, *params = (part.strip().lower() for part in header.split(";"))
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise Refused(415, f"Content-Type is {media[:100]!r}: {send}", "body")
    for param in params:
        name, _, value = param.partition("=")
        charset = value.strip().strip('"')
        if name.strip() == "charset" and charset not in ("utf-8", "utf8"):
            raise Refused(415, f"charset {charset[:40]!r}: the body must be UTF-8 JSON", "body")


def request_model(settings: Settings) -> RequestModel:
    """The request model of `settings`: its limits, its indexes' filter fields, their names."""
    serve = settings.serve
    specs = index_specs(settings.tables)
    fields: dict[str, str] = {}
    for spec in specs.values():
        for name, kind in spec.fields.items():
            fields.setdefault(name, kind)  # one kind per name: an index that differs says 400
    takes = _filter_types(serve)
    filter_fields: dict[str, Any] = {
        f"f{number}": (takes[kind] | None, Field(None, alias=name))
        for number, (name, kind) in enumerate(fields.items())
    }
    counted: dict[str, Any] = {"_count": model_validator(mode="after")(_at_most(serve.max_filters))}
    filters = create_model(
        "Filters",
        __config__=ConfigDict(
            extra="forbid",
            strict=True,
            regex_engine="python-re",
            json_schema_extra={"maxProperties": serve.max_filters},
        ),
        __doc__="metadata field -> the values to match: a tag field takes a value or a list "
        "of them (any of; a number matches the tag a column of that value is written as, "
        "integers exactly at any size), a numeric field a number or a range, a text field "
        f"words (at most {serve.max_filter_words}, serve.max_filter_words)",
        __validators__=counted,
        **filter_fields,
    )
    lsn = "wait until the index shows this commit (an LSN as pg_current_wal_lsn() prints it)"
    index: Any = Literal[tuple(specs) or ("",)]
    text: Any = Annotated[str, Field(min_length=1, max_length=serve.max_text_chars)]
    k: Any = Annotated[int, Field(ge=1, le=serve.max_k), BeforeValidator(_integral)]
    lsn_text: Any = Annotated[str, Field(pattern=LSN_PATTERN)]
    request_fields: dict[str, Any] = {
        "text": (text, Field(description="the question")),
        "k": (k, Field(5, description="how many hits")),
        "filters": (filters, Field(default_factory=filters)),
        "hybrid": (bool, Field(False, description="fuse the vector ranking with a BM25 one")),
        "min_lsn": (lsn_text | None, Field(None, description=lsn)),
        "index": (index | None, Field(None, description="the index (default: the first)")),
    }
    example: dict[str, Any] = {"text": "how do I rotate my API keys?", "k": 5, "hybrid": True}
    config = ConfigDict(**_STRICT, json_schema_extra={"examples": [example]})
    model = create_model("SearchRequest", __config__=config, **request_fields)
    return RequestModel(model, fields, tuple(specs), serve)


def _filter_types(serve: ServeSettings) -> dict[str, Any]:
    """What a filter of each kind takes (a range on a tag or text field is a 400, as a filter
    on a field the index does not have: what the index's fields say)."""
    not_range = BeforeValidator(_no_range)
    tag: Any = Annotated[str, Field(pattern=r"\S")]
    scalar: Any = tag | bool | int | Number
    values: Any = Annotated[list[scalar], Field(min_length=1, max_length=serve.max_filter_values)]
    words_within = AfterValidator(_words_within(serve.max_filter_words))
    text: Any = Annotated[str, Field(pattern=r"\w"), words_within]
    return {
        "tag": Annotated[scalar | values, not_range],
        "numeric": Number | Range,
        "text": Annotated[text, not_range],
    }


def _integral(value: object) -> object:
    """A number with no fraction is an integer to JSON Schema (5.0 is 5); true is no number."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _no_range(value: object) -> object:
    if isinstance(value, dict):
        raise PydanticCustomError(
            "filter_kind", "a range applies to numeric fields: give a value (or, on a tag "
            "field, a list of values: any of)",
        )  # fmt: skip
    return value


def _words_within(limit: int) -> Any:
    def check(value: str) -> str:
        count = len(words(value))
        if count > limit:
            raise PydanticCustomError(
                "too_many_words", f"{count} words; at most {limit} (serve.max_filter_words)"
            )
        return value

    return check


def _at_most(limit: int) -> Any:
    def check(filters: BaseModel) -> BaseModel:
        count = len(filters.model_fields_set)
        if count > limit:
            raise PydanticCustomError(
                "too_many_filters", f"{count} filters; at most {limit} (serve.max_filters)"
            )
        return filters

    return check

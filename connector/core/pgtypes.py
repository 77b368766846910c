"""PostgreSQL text output <-> Python values, and values as Redis hash fields (pure).

A value travels through the connector as PostgreSQL's own text output plus its type name as
`format_type()` prints it, because that is what both the initial snapshot (`SELECT col::text`) and
wal2json give us. This module turns that pair into a typed Python value when someone needs one,
turns wal2json's JSON values back into the text output, and renders a value as the field of a
RediSearch TAG / NUMERIC / TEXT attribute.

Nothing here raises on odd input: a value that does not parse stays the text PostgreSQL printed,
because one strange row must never stop the replication stream.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any, Literal

from connector.core.fulltext import fulltext

__all__ = [
    "PgValue", "metadata_field", "parse_array", "pg_text", "tag_text", "tag_value", "typed_value",
]  # fmt: skip

MetadataKind = Literal["tag", "numeric", "text"]

_TYPMOD = re.compile(r"\([^)]*\)")
_INT_TYPES = frozenset({"smallint", "integer", "bigint", "int", "int2", "int4", "int8", "oid"})
_FLOAT_TYPES = frozenset({"real", "double precision", "float4", "float8"})
_NUMERIC_TYPES = frozenset({"numeric", "decimal"})
_BOOL_TYPES = frozenset({"boolean", "bool"})
_JSON_TYPES = frozenset({"json", "jsonb"})
_TIMESTAMPTZ_TYPES = frozenset({"timestamp with time zone", "timestamptz"})
_TIMESTAMP_TYPES = frozenset({"timestamp without time zone", "timestamp"})
_BOOL_TEXT = {
    "t": True, "true": True, "y": True, "yes": True, "on": True, "1": True,
    "f": False, "false": False, "n": False, "no": False, "off": False, "0": False,
}  # fmt: skip


# --------------------------------------------------------------------------- text -> Python


@dataclass(frozen=True, slots=True)
class PgValue:
    """One column value: PostgreSQL's text output (None for NULL) and the column type name."""

    text: str | None
    type: str

    @property
    def value(self) -> Any:
        """The typed Python value (see `typed_value`)."""
        return typed_value(self.text, self.type)


def typed_value(text: str | None, type_name: str) -> Any:
    """PostgreSQL's text output of a value of type `type_name` as a Python value.

    None for NULL; int, Decimal, float, bool, json-decoded data, datetime (tz-aware for
    `with time zone`), date, bytes, and lists (nested for multi-dimensional arrays) for
    array types. Any other type, and any text that does not parse, stays the str.
    """
    if text is None:
        return None
    try:
        return _converter(type_name)(text)
    except Exception:  # odd input never stops the stream: keep what PostgreSQL printed
        return text


def _base_type(type_name: str) -> tuple[str, bool]:
    """The type name without typmods and array brackets, and whether it was an array.

    `format_type()` puts typmods in the middle ("timestamp(3) with time zone") and prints
    one "[]" whatever the number of dimensions.
    """
    name = type_name.strip()
    is_array = name.endswith("[]")
    while name.endswith("[]"):
        name = name[:-2]
    if "(" in name:
        name = _TYPMOD.sub("", name)
    return " ".join(name.lower().split()), is_array


@lru_cache(maxsize=1024)
def _converter(type_name: str) -> Callable[[str], Any]:
    """The text -> value function for one type name (cached: called once per column value)."""
    base, is_array = _base_type(type_name)
    scalar = _scalar_converter(base)
    if not is_array:
        return scalar
    return lambda text: _typed_elements(parse_array(text), scalar)


def _scalar_converter(base: str) -> Callable[[str], Any]:
    converters: list[tuple[frozenset[str], Callable[[str], Any]]] = [
        (_INT_TYPES, int),
        (_NUMERIC_TYPES, Decimal),
        (_FLOAT_TYPES, float),
        (_BOOL_TYPES, _parse_bool),
        (_JSON_TYPES, json.loads),
        (_TIMESTAMPTZ_TYPES, _parse_timestamptz),
        (_TIMESTAMP_TYPES, _parse_timestamp),
        (frozenset({"date"}), _parse_date),
        (frozenset({"bytea"}), _parse_bytea),
    ]
    for names, convert in converters:
        if base in names:
            return convert
    return _identity


def _identity(text: str) -> str:
    return text


def _typed_elements(items: list[Any], convert: Callable[[str], Any]) -> list[Any]:
    """Type each element of a parsed array; an element that does not parse stays its str."""
    out: list[Any] = []
    for item in items:
        if item is None:
            out.append(None)
        elif isinstance(item, list):
            out.append(_typed_elements(item, convert))
        else:
            try:
                out.append(convert(item))
            except Exception:
                out.append(item)
    return out


def _parse_bool(text: str) -> bool:
    return _BOOL_TEXT[text.strip().lower()]


def _parse_timestamp(text: str) -> datetime:
    """ISO output ("2024-01-02 03:04:05.123456"); 'infinity' and BC dates raise (stay str)."""
    return datetime.fromisoformat(text)


def _parse_timestamptz(text: str) -> datetime:
    """ISO output with an offset ("+00", "+05:30", "-08", "+05:53:28"), always tz-aware."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _parse_date(text: str) -> date:
    return date.fromisoformat(text)


def _parse_bytea(text: str) -> bytes:
    """The hex format (`\\x0102`, the default bytea_output) or the old escape format."""
    if text.startswith("\\x"):
        return bytes.fromhex(text[2:])
    return _parse_bytea_escape(text)


def _parse_bytea_escape(text: str) -> bytes:
    out = bytearray()
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch != "\\":
            out.extend(ch.encode("latin-1"))
            i += 1
        elif text[i + 1 : i + 2] == "\\":
            out.append(0x5C)
            i += 2
        else:
            out.append(int(text[i + 1 : i + 4], 8))
            i += 4
    return bytes(out)


# --------------------------------------------------------------------------- array literals


# Tag fields are indexed with this separator (not ","), so a scalar value holding a comma stays
# one tag and a filter matches it literally; array elements are joined with it.
TAG_SEPARATOR = "\x1f"


def parse_array(text: str, delimiter: str = ",") -> list[Any]:
    """Parse an array literal (`{a,"b,c",NULL,{1,2}}`) into nested lists of str and None.

    Follows `array_out`: elements are quoted when they hold the delimiter, quotes, braces,
    backslashes or spaces, or are empty or the word NULL; inside quotes a backslash escapes the
    next character. A bare NULL is SQL NULL. Raises ValueError on malformed input.
    """
    text = text.strip()
    if text.startswith("["):  # "[0:1]={1,2}": dimensions given when a lower bound is not 1
        text = text[text.index("=") + 1 :].lstrip()
    if not text.startswith("{"):
        raise ValueError(f"not an array literal: {text[:40]!r}")
    try:
        items, end = _parse_level(text, 1, delimiter)
    except IndexError:
        raise ValueError(f"unterminated array literal: {text[:40]!r}") from None
    if text[end:].strip():
        raise ValueError(f"junk after array literal: {text[:40]!r}")
    return items


def _parse_level(text: str, pos: int, delimiter: str) -> tuple[list[Any], int]:
    """Parse one brace level starting just after its "{"; return it and the position after "}"."""
    items: list[Any] = []
    pos = _skip_space(text, pos)
    if text[pos] == "}":
        return items, pos + 1
    while True:
        item, pos = _parse_item(text, _skip_space(text, pos), delimiter)
        items.append(item)
        pos = _skip_space(text, pos)
        ch = text[pos]
        if ch == "}":
            return items, pos + 1
        if ch != delimiter:
            raise ValueError(f"unexpected {ch!r} at {pos} in array literal")
        pos += 1


def _parse_item(text: str, pos: int, delimiter: str) -> tuple[Any, int]:
    ch = text[pos]
    if ch == "{":
        return _parse_level(text, pos + 1, delimiter)
    if ch == '"':
        return _parse_quoted(text, pos + 1)
    return _parse_bare(text, pos, delimiter)


def _parse_quoted(text: str, pos: int) -> tuple[str, int]:
    """A quoted element starting after its opening quote; return it and the position after."""
    out: list[str] = []
    while True:
        end = text.index('"', pos)
        backslash = text.find("\\", pos, end)
        if backslash < 0:
            out.append(text[pos:end])
            return "".join(out), end + 1
        out.append(text[pos:backslash])
        out.append(text[backslash + 1])
        pos = backslash + 2


def _parse_bare(text: str, pos: int, delimiter: str) -> tuple[str | None, int]:
    """An unquoted element: up to the delimiter or "}", surrounding spaces dropped."""
    out: list[str] = []
    escaped = False
    while True:
        ch = text[pos]
        if ch == "\\":
            out.append(text[pos + 1])
            escaped = True
            pos += 2
            continue
        if ch == delimiter or ch == "}":
            break
        out.append(ch)
        pos += 1
    value = "".join(out).strip()
    if not escaped and value.upper() == "NULL":
        return None, pos
    return value, pos


def _skip_space(text: str, pos: int) -> int:
    while text[pos].isspace():
        pos += 1
    return pos


# --------------------------------------------------------------------------- wal2json -> text


def pg_text(json_value: Any) -> str | None:
    """A value as wal2json format-version 2 prints it in JSON, back as PostgreSQL's text output.

    wal2json prints booleans as JSON true/false, numeric, integer and float columns as bare
    JSON numbers, and everything else as JSON strings. Booleans become "true"/"false" (what
    `true::text` gives). A Decimal is printed without exponent unless it has a positive one
    (only floats print those): the digits of a numeric survive exactly. Parsing floats as
    str keeps every number exactly as PostgreSQL printed it; the decoder does that.
    """
    if json_value is None or isinstance(json_value, str):
        return json_value
    if isinstance(json_value, bool):
        return "true" if json_value else "false"
    if isinstance(json_value, int):
        return str(json_value)
    if isinstance(json_value, Decimal):
        return _decimal_text(json_value)
    if isinstance(json_value, float):
        return _float_text(json_value)
    if isinstance(json_value, dict | list):
        return json.dumps(json_value, separators=(", ", ": "))
    return str(json_value)


def _decimal_text(value: Decimal) -> str:
    if not value.is_finite():
        return "NaN" if value.is_nan() else ("-Infinity" if value < 0 else "Infinity")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent > 0:
        return format(value, "e")  # "1.5e+20", as float8out prints large floats
    return format(value, "f")


def _float_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


# --------------------------------------------------------------------------- Redis fields


def metadata_field(value: PgValue, kind: MetadataKind) -> str | float | None:
    """The value as a Redis hash field for a RediSearch attribute of `kind`; None: omit it.

    numeric: numbers as float, booleans 1/0, timestamps and dates as POSIX seconds (naive
    timestamps and dates taken as UTC), numeric-looking text parsed; anything else None so a
    bad value leaves the attribute out rather than failing the row. tag: array elements joined
    with TAG_SEPARATOR (NULL elements left out), booleans "true"/"false", anything else its text.
    text: the text as the full-text index is to see it (`fulltext`: line breaks and other
    characters RediSearch does not split words on become spaces).
    """
    if value.text is None:
        return None
    if kind == "numeric":
        return _numeric_field(value)
    if kind == "tag":
        return _tag_field(value.text, value.type)
    return fulltext(value.text)


def _numeric_field(value: PgValue) -> float | None:
    typed = value.value
    if isinstance(typed, bool):
        return 1.0 if typed else 0.0
    if isinstance(typed, datetime):
        aware = typed if typed.tzinfo is not None else typed.replace(tzinfo=UTC)
        return aware.timestamp()
    if isinstance(typed, date):
        return datetime(typed.year, typed.month, typed.day, tzinfo=UTC).timestamp()
    if isinstance(typed, int | float | Decimal | str):
        try:
            number = float(typed)
        except (ValueError, OverflowError):
            return None
        return None if math.isnan(number) else number
    return None


def tag_text(text: str) -> str:
    """One tag as the index holds it: the separator cannot occur inside, ends are trimmed.
    Queries normalise their values the same way, so a value always matches itself."""
    return text.replace(TAG_SEPARATOR, " ").strip()


# float8out (PostgreSQL 12 on) prints the shortest exact digits, in exponent form from 1e15 on.
_FLOAT8_PLAIN_BELOW = 1e15


def tag_value(value: str | int | float) -> str:
    """A filter's value as the tag written from a column of the same value: a str as it is;
    booleans as boolean columns are tagged ("true"/"false"); integers exactly, at any size (as
    integer and numeric columns print them); other numbers as a float8 column prints them
    (an integral one without ".0", below 1e15). A numeric column with a scale prints its zeros
    ("42.50"): give such a value as that text."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < _FLOAT8_PLAIN_BELOW:
        return str(int(value))
    text = _float_text(value)
    if abs(value) >= _FLOAT8_PLAIN_BELOW and "e" not in text and text[-1].isdigit():
        return _exponent_form(text)  # Python prints 1e15 <= |x| < 1e16 in full
    return text


def _exponent_form(text: str) -> str:
    """A float Python prints in full as float8out prints it: 1.234567890123456e+15."""
    sign, plain = ("-", text[1:]) if text.startswith("-") else ("", text)
    whole, _, fraction = plain.partition(".")
    digits = (whole + fraction).rstrip("0")
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{mantissa}e+{len(whole) - 1:02d}"


def _tag_field(text: str, type_name: str) -> str | None:
    base, is_array = _base_type(type_name)
    is_bool = base in _BOOL_TYPES
    if not is_array:
        return tag_text(_bool_tag(text) if is_bool else text) or None
    try:
        elements = _flatten(parse_array(text))
    except ValueError:
        return tag_text(text) or None
    if is_bool:
        elements = [_bool_tag(element) for element in elements]
    tags = [tag for tag in (tag_text(element) for element in elements) if tag]
    return TAG_SEPARATOR.join(tags) if tags else None


def _bool_tag(text: str) -> str:
    flag = _BOOL_TEXT.get(text.strip().lower())
    return text if flag is None else ("true" if flag else "false")


def _flatten(items: list[Any]) -> list[str]:
    out: list[str] = []
    for item in items:
        if isinstance(item, list):
            out.extend(_flatten(item))
        elif item is not None:
            out.append(item)
    return out

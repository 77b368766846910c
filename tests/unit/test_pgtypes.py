"""PostgreSQL text output -> Python values, wal2json values -> text, and Redis metadata fields.

The texts below are what PostgreSQL 15 prints (`col::text`, as wal2json passes it on).
"""

import math
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.core.pgtypes import PgValue, metadata_field, parse_array, pg_text, typed_value

IST = timezone(timedelta(hours=5, minutes=30))
PST = timezone(timedelta(hours=-8))


# --------------------------------------------------------------------------- scalars


@pytest.mark.parametrize(
    ("text", "type_name", "expected"),
    [
        ("1", "integer", 1),
        ("-32768", "smallint", -32768),
        ("9000000000", "bigint", 9000000000),
        ("12345678901234567890.123456789", "numeric", Decimal("12345678901234567890.123456789")),
        ("0.0000001", "numeric", Decimal("0.0000001")),
        ("-0.0015", "numeric(10,4)", Decimal("-0.0015")),
        ("Infinity", "numeric", Decimal("Infinity")),
        ("-Infinity", "numeric", Decimal("-Infinity")),
        ("1.5", "real", 1.5),
        ("1e-05", "double precision", 1e-05),
        ("2.25e+300", "double precision", 2.25e300),
        ("-Infinity", "double precision", -math.inf),
        ("t", "boolean", True),
        ("true", "boolean", True),
        ("f", "boolean", False),
        ("false", "boolean", False),
        ('{"a": [1, 2.5]}', "json", {"a": [1, 2.5]}),
        ('[1, "a"]', "jsonb", [1, "a"]),
        ('{"b": null}', "jsonb", {"b": None}),
        ("1.5", "jsonb", 1.5),
        ("2024-01-02", "date", date(2024, 1, 2)),
        ("\\x0102ff", "bytea", b"\x01\x02\xff"),
        ("\\x", "bytea", b""),
        ("a\\\\b\\001", "bytea", b"a\\b\x01"),  # bytea_output = escape
    ],
)
def test_scalar_types(text: str, type_name: str, expected: Any) -> None:
    value = typed_value(text, type_name)
    assert value == expected
    assert type(value) is type(expected)


def test_numeric_keeps_digits_and_nan() -> None:
    assert str(typed_value("3.10", "numeric(10,2)")) == "3.10"
    assert typed_value("NaN", "numeric").is_nan()
    assert math.isnan(typed_value("NaN", "real"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-02 03:04:05.123456+00", datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)),
        ("2024-06-01 12:00:00.5+00", datetime(2024, 6, 1, 12, 0, 0, 500000, tzinfo=UTC)),
        ("2024-01-02 03:04:05+05:30", datetime(2024, 1, 2, 3, 4, 5, tzinfo=IST)),
        ("2024-01-01 19:04:05.123456-08", datetime(2024, 1, 1, 19, 4, 5, 123456, tzinfo=PST)),
        (
            "1800-01-01 00:00:00+05:53:28",  # local mean time: offsets with seconds
            datetime(1800, 1, 1, tzinfo=timezone(timedelta(hours=5, minutes=53, seconds=28))),
        ),
    ],
)
def test_timestamptz_is_aware(text: str, expected: datetime) -> None:
    value = typed_value(text, "timestamp with time zone")
    assert value == expected
    assert value.utcoffset() == expected.utcoffset()


def test_timestamp_without_time_zone_is_naive() -> None:
    value = typed_value("2024-01-02 03:04:05", "timestamp without time zone")
    assert value == datetime(2024, 1, 2, 3, 4, 5)
    assert value.tzinfo is None


def test_typmod_inside_type_name() -> None:
    value = typed_value("2024-01-02 03:04:05.123+00", "timestamp(3) with time zone")
    assert value == datetime(2024, 1, 2, 3, 4, 5, 123000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "type_name"),
    [
        ("infinity", "timestamp with time zone"),
        ("-infinity", "timestamp with time zone"),
        ("infinity", "timestamp without time zone"),
        ("0044-03-15 12:00:00 BC", "timestamp without time zone"),
        ("12024-01-01 00:00:00+00", "timestamp with time zone"),
        ("infinity", "date"),
        ("03:04:05", "time without time zone"),
        ("03:04:05+02", "time with time zone"),
        ("1 day 02:00:00", "interval"),
        ('hé "x" \\ y', "text"),
        ("abc", "character varying(20)"),
        ("ab ", "character(3)"),
        ("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "uuid"),
        ("happy", "mood"),
        ("happy", "public.mood"),
        ("10.0.0.1/8", "inet"),
    ],
)
def test_other_values_stay_text(text: str, type_name: str) -> None:
    assert typed_value(text, type_name) == text


@pytest.mark.parametrize(
    ("text", "type_name"),
    [
        ("abc", "integer"),
        ("1.5", "bigint"),
        ("twelve", "numeric"),
        ("fast", "double precision"),
        ("maybe", "boolean"),
        ("{not json", "jsonb"),
        ("2024-13-45 00:00:00+00", "timestamp with time zone"),
        ("\\xZZ", "bytea"),
        ("caf\u00e9\u20ac", "bytea"),
        ("{a,b", "text[]"),
        ("{a}junk", "text[]"),
        ('{"unterminated}', "text[]"),
        ("not an array", "integer[]"),
    ],
)
def test_odd_input_falls_back_to_text(text: str, type_name: str) -> None:
    assert typed_value(text, type_name) == text


@pytest.mark.parametrize("type_name", ["integer", "text", "jsonb", "mood", "text[]", "bytea"])
def test_null(type_name: str) -> None:
    assert typed_value(None, type_name) is None


TYPE_NAMES = [
    "integer",
    "bigint",
    "numeric",
    "real",
    "boolean",
    "json",
    "jsonb",
    "date",
    "bytea",
    "timestamp with time zone",
    "timestamp without time zone",
    "text[]",
    "integer[]",
    "boolean[]",
    "jsonb[]",
    "bytea[]",
    "mood",
]


@given(st.text(), st.sampled_from(TYPE_NAMES))
def test_never_raises(text: str, type_name: str) -> None:
    typed_value(text, type_name)


# --------------------------------------------------------------------------- arrays


@pytest.mark.parametrize(
    ("text", "type_name", "expected"),
    [
        (
            '{a,b,"c,d","with \\"quote\\"",NULL,"","NULL"," sp "}',
            "text[]",
            ["a", "b", "c,d", 'with "quote"', None, "", "NULL", " sp "],
        ),
        ('{"back\\\\slash","{braces}"}', "text[]", ["back\\slash", "{braces}"]),
        ("{1,2,NULL}", "integer[]", [1, 2, None]),
        ("{{1,2},{3,4}}", "integer[]", [[1, 2], [3, 4]]),
        ("{{{1},{2}},{{3},{4}}}", "bigint[]", [[[1], [2]], [[3], [4]]]),
        ("{x,y}", "character varying(5)[]", ["x", "y"]),
        ("{t,f,NULL}", "boolean[]", [True, False, None]),
        ("{1.50,-2}", "numeric(5,2)[]", [Decimal("1.50"), Decimal("-2")]),
        ('{"\\\\x01","\\\\x"}', "bytea[]", [b"\x01", b""]),
        ('{"{\\"a\\": 1}","[2]"}', "jsonb[]", [{"a": 1}, [2]]),
        (
            '{infinity,"2019-12-31 16:00:00-08"}',
            "timestamp with time zone[]",
            ["infinity", datetime(2020, 1, 1, tzinfo=UTC)],
        ),
        ("{2024-01-02,infinity}", "date[]", [date(2024, 1, 2), "infinity"]),
        ("{happy,sad}", "mood[]", ["happy", "sad"]),
        ("{}", "text[]", []),
        ("[0:1]={7,8}", "integer[]", [7, 8]),
        ("{1,x}", "integer[]", [1, "x"]),  # one odd element stays text, the rest is typed
        ("{ a , b }", "text[]", ["a", "b"]),  # array_in syntax: unquoted spaces trimmed
        ("{\\NULL,null}", "text[]", ["NULL", None]),
    ],
)
def test_arrays(text: str, type_name: str, expected: list[Any]) -> None:
    assert typed_value(text, type_name) == expected


def test_numeric_array_keeps_digits_and_nan() -> None:
    value = typed_value("{1.50,NaN}", "numeric(5,2)[]")
    assert str(value[0]) == "1.50"
    assert value[1].is_nan()


def test_parse_array_raises_value_error() -> None:
    with pytest.raises(ValueError, match="unterminated"):
        parse_array("{a,b")
    with pytest.raises(ValueError, match="junk"):
        parse_array("{a}b")
    with pytest.raises(ValueError, match="not an array"):
        parse_array("a,b")
    with pytest.raises(ValueError, match="unexpected"):
        parse_array('{"a"b}')


def test_parse_array_other_delimiter() -> None:
    assert parse_array("{(1,1),(0,0);(2,2),(1,1)}", ";") == ["(1,1),(0,0)", "(2,2),(1,1)"]


# --------------------------------------------------------------------------- wal2json -> text


@pytest.mark.parametrize(
    ("json_value", "expected"),
    [
        (None, None),
        (True, "true"),
        (False, "false"),
        (1, "1"),
        (-9000000000, "-9000000000"),
        (Decimal("3.10"), "3.10"),
        (Decimal("12345678901234567890.123456789"), "12345678901234567890.123456789"),
        (Decimal("0.0000001"), "0.0000001"),  # str(Decimal) would say 1E-7
        (Decimal("1.5e+20"), "1.5e+20"),  # only floats print a positive exponent
        (Decimal("NaN"), "NaN"),
        (Decimal("-Infinity"), "-Infinity"),
        (1e-05, "1e-05"),
        (1.5, "1.5"),
        (math.inf, "Infinity"),
        (math.nan, "NaN"),
        ('hé "x" \\ y', 'hé "x" \\ y'),
        ("", ""),
        ("{a,NULL}", "{a,NULL}"),
        ({"a": [1, 2]}, '{"a": [1, 2]}'),
    ],
)
def test_pg_text(json_value: Any, expected: str | None) -> None:
    assert pg_text(json_value) == expected


def test_pg_text_round_trips_through_typed_value() -> None:
    assert typed_value(pg_text(True), "boolean") is True
    assert typed_value(pg_text(Decimal("3.10")), "numeric(10,2)") == Decimal("3.10")
    assert typed_value(pg_text(42), "bigint") == 42


# --------------------------------------------------------------------------- Redis fields


def numeric(text: str | None, type_name: str) -> str | float | None:
    return metadata_field(PgValue(text, type_name), "numeric")


def tag(text: str | None, type_name: str) -> str | float | None:
    return metadata_field(PgValue(text, type_name), "tag")


def test_numeric_fields() -> None:
    assert numeric("42", "integer") == 42.0
    assert numeric("3.10", "numeric(10,2)") == 3.1
    assert numeric("1e-05", "double precision") == 1e-05
    assert numeric("t", "boolean") == 1.0
    assert numeric("false", "boolean") == 0.0
    assert numeric("12.5", "text") == 12.5  # numeric-looking text is used
    assert numeric("Infinity", "numeric") == math.inf


def test_numeric_fields_of_times_are_epoch_seconds() -> None:
    epoch = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    assert numeric("2024-01-02 03:04:05+00", "timestamp with time zone") == epoch
    assert numeric("2024-01-02 08:34:05+05:30", "timestamp with time zone") == epoch
    assert numeric("2024-01-02 03:04:05", "timestamp without time zone") == epoch  # as UTC
    assert numeric("2024-01-02", "date") == datetime(2024, 1, 2, tzinfo=UTC).timestamp()
    assert numeric("2024-01-02 03:04:05.5+00", "timestamptz") == epoch + 0.5


@pytest.mark.parametrize(
    ("text", "type_name"),
    [
        (None, "integer"),
        ("abc", "text"),
        ("happy", "mood"),
        ("NaN", "numeric"),
        ("NaN", "double precision"),
        ("{1,2}", "integer[]"),
        ('{"a": 1}', "jsonb"),
        ("03:04:05", "time without time zone"),
        ("0044-03-15 12:00:00 BC", "timestamp without time zone"),
    ],
)
def test_numeric_field_omitted(text: str | None, type_name: str) -> None:
    assert numeric(text, type_name) is None


def test_tag_fields() -> None:
    assert tag("news", "text") == "news"
    assert tag("happy", "public.mood") == "happy"
    assert tag("t", "boolean") == "true"
    assert tag("f", "boolean") == "false"
    assert tag("42", "integer") == "42"
    assert tag('{a,"b c",NULL,d}', "text[]") == "a\x1fb c\x1fd"  # TAG_SEPARATOR
    assert tag("{{1,2},{3,4}}", "integer[]") == "1\x1f2\x1f3\x1f4"
    assert tag("{t,f}", "boolean[]") == "true\x1ffalse"
    assert tag("{}", "text[]") is None
    assert tag("{NULL}", "text[]") is None
    assert tag("{broken", "text[]") == "{broken"
    assert tag(None, "text") is None


def test_text_fields() -> None:
    assert metadata_field(PgValue("A title", "text"), "text") == "A title"
    assert metadata_field(PgValue("{a,b}", "text[]"), "text") == "{a,b}"
    assert metadata_field(PgValue(None, "text"), "text") is None


def test_pg_value_uses_typed_value() -> None:
    assert PgValue("{1,2}", "integer[]").value == [1, 2]
    assert PgValue(None, "integer").value is None

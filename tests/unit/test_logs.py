"""Logging: the line formats, the lsn/table context, and that secrets never reach stderr."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from connector.core.lsn import Lsn
from connector.errors import ConfigError
from connector.logs import Redactor, configure_logging, redact

DSN = "postgresql://connector:pg-s3cret@db.internal:5432/app"
REDIS_URL = "redis://:r3dis-pass@cache:6379/0"
API_KEY = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123"
SECRETS = ("pg-s3cret", "r3dis-pass", API_KEY)


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    """configure_logging changes the root logger: give every test a clean one back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line]


def test_text_lines_carry_lsn_and_table(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("debug", "text")
    log = logging.getLogger("connector.test")
    log.info("applied %d rows", 3, extra={"lsn": Lsn.parse("16/B374D848"), "table": "public.docs"})
    log.debug("int lsn", extra={"lsn": (0x16 << 32) | 0xB374D848})
    log.warning("no context")

    first, second, third = lines(capsys.readouterr().err)
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO connector\.test: ", first)
    assert first.endswith("applied 3 rows lsn=16/B374D848 table=public.docs")
    assert second.endswith("DEBUG connector.test: int lsn lsn=16/B374D848")
    assert third.endswith("WARNING connector.test: no context")


def test_json_lines_parse_and_carry_context(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    log = logging.getLogger("connector.flow.daemon")
    log.info("batch of %s", "x", extra={"lsn": "0/16B3748", "table": "public.docs"})
    log.debug("below the level")
    try:
        raise ValueError("bad row")
    except ValueError:
        log.exception("dead-lettered", extra={"table": "public.docs"})

    first, second = (json.loads(line) for line in lines(capsys.readouterr().err))
    assert set(first) == {"ts", "level", "logger", "message", "lsn", "table"}
    assert first["level"] == "INFO"
    assert first["logger"] == "connector.flow.daemon"
    assert first["message"] == "batch of x"
    assert first["lsn"] == "0/16B3748" and first["table"] == "public.docs"
    assert first["ts"].endswith("Z")
    assert datetime.fromisoformat(first["ts"]).utcoffset() == timedelta(0)
    assert second["level"] == "ERROR" and "lsn" not in second
    assert second["exc"].startswith("Traceback") and "ValueError: bad row" in second["exc"]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_secrets_are_masked_in_messages_and_tracebacks(
    fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", fmt)
    log = logging.getLogger("connector.test")
    log.info("connecting to %s and %s with %s", DSN, REDIS_URL, API_KEY)
    try:
        raise ConnectionError(f"cannot reach {DSN} (password=pg-s3cret) via {REDIS_URL}")
    except ConnectionError:
        log.exception("openai key %s failed", API_KEY)

    err = capsys.readouterr().err
    for secret in SECRETS:
        assert secret not in err
    assert "postgresql://connector:***@db.internal:5432/app" in err
    assert "redis://:***@cache:6379/0" in err
    assert "password=***" in err
    assert "ConnectionError" in err  # the traceback itself is kept


def test_reconfiguring_replaces_the_handler(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "text")
    configure_logging("INFO", "json")
    logging.getLogger("connector.test").info("once")
    (only,) = lines(capsys.readouterr().err)
    assert json.loads(only)["message"] == "once"


def test_invalid_options_name_the_setting() -> None:
    with pytest.raises(ConfigError, match="log level 'LOUD'"):
        configure_logging("LOUD")
    with pytest.raises(ConfigError, match="log format 'xml'"):
        configure_logging("INFO", "xml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (DSN, "postgresql://connector:***@db.internal:5432/app"),
        (REDIS_URL, "redis://:***@cache:6379/0"),
        ("rediss://default:p%40ss@r.example.com:6380", "rediss://default:***@r.example.com:6380"),
        ("host=db password=secret user=app", "host=db password=*** user=app"),
        ("password='two words' host=db", "password='***' host=db"),
        ('{"password": "x1", "user": "a"}', '{"password": "***", "user": "a"}'),
        ("Password: hunter2", "Password: ***"),
        (f"key={API_KEY}.", "key=***."),
        ("Authorization: Bearer abcdefgh12345678", "Authorization: Bearer ***"),
        # nothing secret: left alone
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("postgresql://app@db/app", "postgresql://app@db/app"),
        ("chunk_tokens=256 using sk-learn", "chunk_tokens=256 using sk-learn"),
        ("password authentication failed", "password authentication failed"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_redactor_survives_a_malformed_log_call() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%d items", ("many",), None)
    assert Redactor().filter(record) is True
    assert record.msg == "%d items"  # left for the handler to report

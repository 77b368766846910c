"""Logging setup: readable text or JSON lines on stderr, with secrets masked on the way out.

The connector handles DSNs, Redis URLs and API keys; a driver error or a debug line can echo any
of them. `Redactor` sits on the handler `configure_logging` installs, so every record that
reaches stderr (from the connector or from a library) is masked, message and traceback alike.
Context travels as `extra={"lsn": ..., "table": ...}` and is printed after the message.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from connector.core.lsn import Lsn
from connector.errors import ConfigError

__all__ = ["FORMATS", "LEVELS", "Redactor", "configure_logging", "redact"]

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MASK = "***"
CONTEXT_KEYS = ("lsn", "table")

# user:secret@ in any scheme://  (postgresql://u:p@h, redis://:p@h, rediss://u:p@h, ...)
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@]*:)[^\s@/]+(?=@)")
# password=x, password: x, "password": "x", password='a b' (libpq); also similar key names
_KEY_VALUE = re.compile(
    r"""(?P<head>\b(?:password|passwd|pwd|secret|api[_-]?key)['"]?\s*[=:]\s*)"""
    r"""(?:'[^']*'|"[^"]*"|[^\s,;&'"})\]]+)""",
    re.IGNORECASE,
)
# OpenAI-style keys: sk-..., sk-proj-..., and bearer tokens in echoed headers
_API_KEY = re.compile(r"(?<![A-Za-z0-9_\-])sk-[A-Za-z0-9_\-]{16,}")
_BEARER = re.compile(r"(?P<head>\bBearer\s+)[A-Za-z0-9._~+/=\-]{8,}", re.IGNORECASE)


def _mask_value(match: re.Match[str]) -> str:
    value = match.group(0)[len(match.group("head")) :]
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match.group('head')}{quote}{MASK}{quote}"


def redact(text: str) -> str:
    """`text` with passwords, URL credentials and API keys replaced by `***`."""
    text = _URL_PASSWORD.sub(rf"\g<head>{MASK}", text)
    text = _KEY_VALUE.sub(_mask_value, text)
    text = _API_KEY.sub(MASK, text)
    return _BEARER.sub(rf"\g<head>{MASK}", text)


class Redactor(logging.Filter):
    """Masks secrets in a record's message and traceback before any formatter sees them."""

    _plain = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            # A malformed log call: leave it to the handler, which reports it without raising.
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._plain.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _context_value(value: Any) -> str:
    """LSNs print the way PostgreSQL prints them, whether passed as `Lsn` or as an int."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 64:
        return str(Lsn(value))
    return str(value)


def _context(record: logging.LogRecord) -> dict[str, str]:
    return {
        key: _context_value(getattr(record, key))
        for key in CONTEXT_KEYS
        if getattr(record, key, None) is not None
    }


class TextFormatter(logging.Formatter):
    """The classic line, plus ` lsn=... table=...` when the record carries them."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        extra = " ".join(f"{key}={value}" for key, value in _context(record).items())
        return f"{line} {extra}" if extra else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers that index fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_context(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, default=str)


class _ConnectorHandler(logging.StreamHandler[TextIO]):
    """Marks the handler this module installed, so reconfiguring replaces it, not doubles it."""


def _check(level: str, fmt: str) -> tuple[str, str]:
    name = level.strip().upper()
    if name == "WARN":
        name = "WARNING"
    if name not in LEVELS:
        raise ConfigError(f"log level {level!r} is not valid: use one of {', '.join(LEVELS)}")
    kind = fmt.strip().lower()
    if kind not in FORMATS:
        raise ConfigError(f"log format {fmt!r} is not valid: use one of {', '.join(FORMATS)}")
    return name, kind


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Send the root logger to stderr in `fmt` ("text" or "json") at `level`, secrets masked.
    Calling it again replaces the previous setup; handlers others installed are left alone."""
    name, kind = _check(level, fmt)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _ConnectorHandler)]:
        root.removeHandler(old)
        old.close()
    handler = _ConnectorHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if kind == "json" else TextFormatter())
    handler.addFilter(Redactor())
    root.addHandler(handler)
    root.setLevel(name)

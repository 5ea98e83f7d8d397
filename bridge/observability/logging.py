"""One JSON object per log line, with tokens, passwords, webhook secrets and API keys redacted.

``configure_logging`` installs it on the root logger; ``log_context`` binds ids to a block.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import MappingProxyType
from typing import IO, Any

REDACTED = "[REDACTED]"
# The ids a reader correlates by; always emitted under these names when known.
CONTEXT_FIELDS = ("message_id", "job_id", "operation_id", "request_id")
MIN_LITERAL_SECRET = 8
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

_SECRET_VALUE = r"[^\s\"'&,;}\]]+"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # "Authorization: Basic …", "authorization=…": the whole credential, whatever its scheme.
    (
        re.compile(r"(?i)(\bauthorization[\"']?\s*[:=]\s*[\"']?)[^\"'\r\n,;}]+"),
        r"\1" + REDACTED,
    ),
    (re.compile(r"(?i)\b(bearer)\s+(?!\[REDACTED\])[^\s\"',;}]+"), r"\1 " + REDACTED),
    (re.compile(r"(?i)\bcwt=" + _SECRET_VALUE), "cwt=" + REDACTED),
    (re.compile(r"whsec_[A-Za-z0-9+/=_-]+"), "whsec_" + REDACTED),
    (
        re.compile(
            r"(?i)(\b(?:password|passwd|pwd|secret|api[_-]?keys?|access_token|refresh_token"
            r"|token|x-api-key)[\"']?\s*[:=]\s*[\"']?)(?!\[REDACTED\])" + _SECRET_VALUE
        ),
        r"\1" + REDACTED,
    ),
    # Credentials inside URLs: scheme://user:password@host
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@"), r"\1" + REDACTED + "@"),
)
# Every pattern above needs one of these words in the text; most log text (ids, paths, counts)
# has none, so one search replaces six substitutions. Keep it in step with _PATTERNS. It runs
# on lower-cased ASCII text only: (?i) also matches non-ASCII look-alikes (dotless i, long s)
# that lower() keeps, so other text always goes through the patterns.
_MAYBE_SECRET = re.compile(
    r"authorization|bearer|cwt=|whsec_|passw|pwd|secret|api[_-]?key|token|://"
)
_SECRET_KEY = re.compile(
    r"(?i)^(?:.*[_-])?(?:password|passwd|secret|secrets|token|access_token|authorization"
    r"|api_?keys?|cookie)$"
)

_NO_CONTEXT: Mapping[str, Any] = MappingProxyType({})
_context: ContextVar[Mapping[str, Any]] = ContextVar("bridge_log_context", default=_NO_CONTEXT)
_literals: set[str] = set()
_literals_longest_first: tuple[str, ...] = ()  # so a secret containing another goes whole
_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def add_secrets(values: Iterable[str | None]) -> None:
    """Redact these exact values wherever they appear (API keys, the UCWA password).

    Values shorter than 8 characters are ignored: redacting them would mangle ordinary text.
    """
    global _literals_longest_first
    for value in values:
        if value and len(value) >= MIN_LITERAL_SECRET:
            _literals.add(value)
    _literals_longest_first = tuple(sorted(_literals, key=len, reverse=True))


def redact(text: str) -> str:
    """``text`` with every recognisable secret replaced by ``[REDACTED]``."""
    for literal in _literals_longest_first:
        if literal in text:
            text = text.replace(literal, REDACTED)
    if text.isascii() and not _MAYBE_SECRET.search(text.lower()):
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_value(value: Any, key: str | None = None) -> Any:
    """A JSON-ready copy of ``value``: secret-named keys blanked, strings scrubbed."""
    if key is not None and _SECRET_KEY.match(key) and value not in (None, ""):
        return REDACTED
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {str(k): redact_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v) for v in value]
    return redact(str(value))


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Attach ``fields`` (e.g. ``request_id``, ``job_id``) to every record logged in the block."""
    merged = {**_context.get(), **{k: v for k, v in fields.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def push_context(**fields: Any) -> Token[Mapping[str, Any]]:
    """``log_context`` for hooks that cannot wrap a block (Flask before/teardown_request)."""
    return _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})


def pop_context(token: Token[Mapping[str, Any]] | None) -> None:
    if token is not None:
        _context.reset(token)


def current_context() -> Mapping[str, Any]:
    return _context.get()


def request_id_from(header: str | None) -> str:
    """The caller's ``X-Request-Id`` if it is a sane token, else a fresh one."""
    if header and _REQUEST_ID.match(header):
        return header
    return "req_" + secrets.token_hex(8)


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", <ids>, <other extras>, "exc_info"?}``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(_message(record)),
        }
        extras = {**_context.get(), **_extras(record)}
        for name in CONTEXT_FIELDS:
            if extras.get(name) is not None:
                entry[name] = redact_value(extras.pop(name), name)
        for name, value in extras.items():
            if name not in entry:
                entry[name] = redact_value(value, name)
        if record.exc_info:
            entry["exc_info"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack_info"] = redact(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


class RedactingFormatter(logging.Formatter):
    """The classic one-line text format, scrubbed the same way (for a terminal)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        ids = {**_context.get(), **_extras(record)}
        text = super().format(record)
        tags = " ".join(f"{n}={ids[n]}" for n in CONTEXT_FIELDS if ids.get(n) is not None)
        return redact(f"{text} [{tags}]" if tags else text)


def configure_logging(
    level: str | int = "INFO",
    json: bool = True,
    *,
    secrets: Iterable[str | None] = (),
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Send every log record to ``stream`` (stderr) through one redacting handler.

    Replaces the root logger's handlers, so calling it twice leaves one handler.
    """
    add_secrets(secrets)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if json else RedactingFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    logging.captureWarnings(True)
    return handler


def gunicorn_logconfig(level: str = "INFO", json: bool = True) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for gunicorn's own loggers, in the same format."""
    formatter = "bridge.observability.logging." + (
        "JsonFormatter" if json else "RedactingFormatter"
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"bridge": {"()": formatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "bridge",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": level.upper(), "handlers": [], "propagate": True},
            "gunicorn.access": {"level": level.upper(), "handlers": [], "propagate": True},
        },
    }


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except (TypeError, ValueError):  # bad %-arguments must not lose the line
        return f"{record.msg} {record.args!r}"


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        k: v for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("_")
    }


def _rfc3339(epoch: float) -> str:
    m = datetime.fromtimestamp(epoch, UTC)
    # Fields by hand: half the cost of strftime, on every accepted message and log line.
    return (
        f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}"
        f".{m.microsecond // 1000:03d}Z"
    )

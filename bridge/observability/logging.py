"""One JSON object per log line, with tokens, passwords, webhook secrets and API keys redacted.

``configure_logging`` installs it on the root logger; ``log_context`` binds ids to a block.
gunicorn's access log goes through the same formatter as structured fields.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from importlib import metadata
from types import MappingProxyType, TracebackType
from typing import IO, Any, TextIO, cast

REDACTED = "[REDACTED]"
# The ids a reader correlates by; always emitted under these names when known.
CONTEXT_FIELDS = ("message_id", "job_id", "operation_id", "request_id")
MIN_LITERAL_SECRET = 8
ROLES = ("api", "worker", "poller", "demo")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# The WSGI environ key where the app leaves the caller's API key id for the access log.
KEY_ID_ENVIRON = "ucwa_bridge.key_id"
ACCESS_LOGGER = "gunicorn.access"
_TRACEBACK = "\nTraceback (most recent call last):\n"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_ANY_WORD = re.compile(r"[^\W_]")  # a letter or digit: not blank, not decoration

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
_role: str | None = None  # this process's role, on every line once configure_logging set it
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
    """``{"time", "level", "logger", "message", "role", <ids>, <extras>, "exc_info"?}``.

    A gunicorn access record becomes its fields (``access_fields``) instead of a combined-log
    string; a traceback some library pasted into its message moves to ``exc_info``."""

    def __init__(self, role: str | None = None) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        access = _access_atoms(record)
        message, pasted = _split_traceback(
            access_message(access) if access is not None else _message(record)
        )
        entry: dict[str, Any] = {
            "time": _rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(message),
        }
        role = self.role or _role
        if role:
            entry["role"] = role
        extras = {**_context.get(), **_extras(record)}
        if access is not None:
            extras.update(access_fields(access))
        for name in CONTEXT_FIELDS:
            if extras.get(name) is not None:
                entry[name] = redact_value(extras.pop(name), name)
        for name, value in extras.items():
            if name not in entry:
                entry[name] = redact_value(value, name)
        if record.exc_info:
            entry["exc_info"] = redact(self.formatException(record.exc_info))
        elif pasted:
            entry["exc_info"] = redact(pasted)
        if record.stack_info:
            entry["stack_info"] = redact(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


class RedactingFormatter(logging.Formatter):
    """The classic one-line text format, scrubbed the same way (for a terminal)."""

    def __init__(self, role: str | None = None) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        ids = {**_context.get(), **_extras(record)}
        access = _access_atoms(record)
        if access is not None:
            fields = access_fields(access)
            ids.update(fields)
            text = f"{access_message(access)} {fields.get('duration_ms', '-')}ms"
            record = logging.makeLogRecord({**record.__dict__, "msg": text, "args": None})
        text = super().format(record)
        role = self.role or _role
        if role:
            text = f"{role} {text}"
        names = (*CONTEXT_FIELDS, "key_id")
        tags = " ".join(f"{n}={ids[n]}" for n in names if ids.get(n) is not None)
        return redact(f"{text} [{tags}]" if tags else text)


def configure_logging(
    level: str | int = "INFO",
    json: bool = True,
    *,
    secrets: Iterable[str | None] = (),
    stream: IO[str] | None = None,
    role: str | None = None,
) -> logging.Handler:
    """Send every log record to ``stream`` (stderr) through one redacting handler.

    Replaces the root logger's handlers, so calling it twice leaves one handler. ``role`` goes
    on every line of the process (gunicorn's loggers too); ``warnings.warn`` output is logged.
    """
    global _role
    if role is not None:
        _role = role
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


def parse_level(raw: str | None) -> str:
    """``BRIDGE_LOG_LEVEL`` as a level name (default INFO); ValueError for anything else."""
    name = (raw or "").strip().upper() or "INFO"
    if name == "WARN":
        name = "WARNING"
    if name not in LEVELS:
        raise ValueError(f"must be one of {', '.join(LEVELS)}, got {raw!r}")
    return name


def gunicorn_logconfig(level: str = "INFO", json: bool = True, role: str = "api") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for gunicorn's own loggers, in the same format.

    The access log becomes structured fields; ``ProblemGeventWorker`` and friends log through
    ``gunicorn.error``. An unknown ``level`` falls back to INFO (``ucwa-bridge api`` refuses it
    before gunicorn starts)."""
    try:
        level = parse_level(level)
    except ValueError:
        level = "INFO"
    formatter = "bridge.observability.logging." + (
        "JsonFormatter" if json else "RedactingFormatter"
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"bridge": {"()": formatter, "role": role}},
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


def install_excepthooks(logger_name: str = "ucwa_bridge") -> None:
    """Log uncaught exceptions (main thread and other threads) as one JSON line with
    ``exc_info``, instead of Python's multi-line traceback on stderr."""
    logger = logging.getLogger(logger_name)

    def on_uncaught(
        kind: type[BaseException], error: BaseException, tb: TracebackType | None
    ) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, error, tb)
            return
        logger.critical("uncaught exception: %s", error, exc_info=(kind, error, tb))

    def on_thread(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit or args.exc_value is None:
            return
        name = args.thread.name if args.thread is not None else "?"
        logger.critical(
            "uncaught exception in thread %s: %s",
            name,
            args.exc_value,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
            extra={"thread_name": name},
        )

    sys.excepthook = on_uncaught
    threading.excepthook = on_thread


class StrayOutput:
    """A stand-in for ``sys.stderr`` or ``sys.stdout`` that passes JSON log lines through and
    turns any other text printed to it into log lines of their own.

    Libraries print some failures instead of logging them (gunicorn's ``Error: ...`` lines, a
    worker's boot error, a traceback). Each such line becomes one record in this stream's
    ``level`` (ERROR when it speaks of an error), a traceback one record with ``exc_info``; blank
    and decoration-only lines (gunicorn's ``!!!``) are dropped."""

    def __init__(self, stream: IO[str], name: str, level: int) -> None:
        self.stream = stream
        self.name = name
        self.level = level
        self._formatter = JsonFormatter()
        self._partial = ""
        self._traceback: list[str] = []
        self._lock = threading.RLock()

    def write(self, text: str) -> int:
        if not self._partial and not self._traceback and _is_json_line(text):
            return self.stream.write(text)  # a log handler's line: the usual case, kept cheap
        with self._lock:
            self._partial += text
            *lines, self._partial = self._partial.split("\n")
            for line in lines:
                self._take(line)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        with self._lock:
            if self._partial:
                line, self._partial = self._partial, ""
                self._take(line)
            if self._traceback:
                self._emit(self._traceback[-1], "\n".join(self._traceback))
                self._traceback = []
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, buffer ...
        return getattr(self.stream, name)

    def _take(self, line: str) -> None:
        if self._traceback:
            self._traceback.append(line)
            if not line[:1].isspace() and line.strip():  # "ValueError: ..." ends it
                self._emit(line, "\n".join(self._traceback))
                self._traceback = []
        elif line.startswith(_TRACEBACK.strip()):
            self._traceback = [line]
        elif line.startswith("{") and _is_json_line(line + "\n"):
            self.stream.write(line + "\n")  # a log line that came in pieces
        elif _ANY_WORD.search(line):
            self._emit(line.strip(), None)

    def _emit(self, message: str, traceback: str | None) -> None:
        error = traceback is not None or "error" in message.lower()
        record = logging.LogRecord(
            self.name,
            logging.ERROR if error else self.level,
            "",
            0,
            message + "\n" + traceback if traceback else message,
            None,
            None,
        )
        self.stream.write(self._formatter.format(record) + "\n")
        self.stream.flush()


def capture_stray_output() -> None:
    """With JSON logs, make whatever is printed to stdout and stderr outside logging a log line
    too (``StrayOutput``), also in processes forked later. A no-op with text logs."""
    handlers = logging.getLogger().handlers
    if not any(isinstance(handler.formatter, JsonFormatter) for handler in handlers):
        return
    if not isinstance(sys.stderr, StrayOutput):
        sys.stderr = cast(TextIO, StrayOutput(sys.stderr, "stderr", logging.WARNING))
    if not isinstance(sys.stdout, StrayOutput):
        sys.stdout = cast(TextIO, StrayOutput(sys.stdout, "stdout", logging.INFO))


def _is_json_line(text: str) -> bool:
    return text.startswith("{") and text.endswith("}\n") and text.count("\n") == 1


def package_version(distribution: str = "ucwa-bridge") -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


def log_startup(logger: logging.Logger, role: str, settings: Mapping[str, Any]) -> None:
    """One line at start-up: the role, the package version and the effective settings (secret
    values redacted by name and by content, as in every line)."""
    logger.info(
        "%s starting",
        role,
        extra={"version": package_version(), "settings": redact_value(dict(settings))},
    )


def access_fields(atoms: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of one access-log line from gunicorn's atoms: never a header but the request
    id, never the API key (the app leaves its id under ``KEY_ID_ENVIRON``)."""

    def atom(name: str) -> Any:
        value = atoms.get(name)
        return None if value in (None, "", "-") else value

    status = str(atom("s") or "").split(" ", 1)[0]
    micros = atom("D")
    fields: dict[str, Any] = {
        "method": atom("m"),
        "path": atom("U"),
        "query": atom("q"),
        "status": int(status) if status.isdigit() else None,
        "duration_ms": round(int(micros) / 1000, 3) if micros is not None else None,
        "bytes": int(atom("B")) if str(atom("B") or "").isdigit() else None,
        "remote_addr": atom("h"),
        "request_id": atom("{x-request-id}o") or atom("{x-request-id}i"),
        "key_id": atom("{" + KEY_ID_ENVIRON + "}e"),
        "user_agent": atom("a"),
    }
    return {name: value for name, value in fields.items() if value is not None}


def access_message(atoms: Mapping[str, Any]) -> str:
    fields = access_fields(atoms)
    return f"{fields.get('method', '-')} {fields.get('path', '-')} {fields.get('status', '-')}"


def _access_atoms(record: logging.LogRecord) -> Mapping[str, Any] | None:
    if record.name == ACCESS_LOGGER and isinstance(record.args, Mapping):
        return record.args
    return None


def _split_traceback(message: str) -> tuple[str, str | None]:
    """RQ pastes ``traceback.format_exc()`` into some messages: keep the line, move the rest."""
    head, found, rest = message.partition(_TRACEBACK)
    if not found:
        return message, None
    return head.rstrip(), (found + rest).strip()


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

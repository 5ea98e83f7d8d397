"""Injected faults: rules that match UCWA requests and delay, fail or drop them.

A rule fires ``times`` times (or forever), or with probability ``rate``. A 401 rule answers the
MsRtcOAuth challenge and revokes the caller's token; a ``resync`` rule makes an event GET answer
with a ``resync`` link, as a server that lost track of the channel's position (see ``UcwaApp``).
``drop_connection`` (FIN) and ``reset_connection`` (RST) end the TCP connection without an
answer, before the request is carried out or, with ``after_processing``, after it; the match
``connection: "reused"`` limits a rule to requests on a kept-alive connection.
"""

from __future__ import annotations

import itertools
import random
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ucwasim.errors import ConfigError

_DEFAULT_CODES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    408: "ClientTimeout",
    409: "Conflict",
    410: "Gone",
    412: "PreconditionFailed",
    413: "EntityTooLarge",
    415: "UnsupportedMediaType",
    428: "PreconditionRequired",
    429: "TooManyRequests",
    500: "ServiceFailure",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


@dataclass
class Fault:
    id: str
    method: str | None
    path: re.Pattern[str] | None
    kind: str | None
    status: int | None
    code: str | None
    subcode: str | None
    message: str
    retry_after: int | None
    delay_ms: int
    drop_connection: bool
    resync: bool
    times: int | None
    rate: float | None
    reset_connection: bool = False
    after_processing: bool = False
    connection: str | None = None  # "reused" or "new"
    diagnostics: str | None = None
    hits: int = 0

    @property
    def abort(self) -> str | None:
        """How the connection ends without an answer: "reset", "drop" or not at all."""
        if self.reset_connection:
            return "reset"
        return "drop" if self.drop_connection else None

    def matches(self, method: str, path: str, kind: str, reused: bool = False) -> bool:
        if self.connection and (self.connection == "reused") != reused:
            return False
        if self.method and self.method != method.upper():
            return False
        if self.kind and self.kind.lower() != kind.lower():
            return False
        return not (self.path and not self.path.search(path))

    def error_code(self) -> str:
        assert self.status is not None
        return self.code or _DEFAULT_CODES.get(self.status, "ServiceFailure")

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "match": {
                "method": self.method,
                "path": self.path.pattern if self.path else None,
                "rel": self.kind,
                "connection": self.connection,
            },
            "status": self.status,
            "code": self.code,
            "subcode": self.subcode,
            "retry_after": self.retry_after,
            "delay_ms": self.delay_ms,
            "drop_connection": self.drop_connection,
            "reset_connection": self.reset_connection,
            "after_processing": self.after_processing,
            "diagnostics": self.diagnostics,
            "resync": self.resync,
            "times": self.times,
            "rate": self.rate,
            "hits": self.hits,
        }


def _opt_int(spec: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = spec.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{name} must be an integer between {low} and {high}")
    return value


class FaultBook:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)

    def add(self, spec: dict[str, Any]) -> Fault:
        match = spec.get("match") or {}
        if not isinstance(match, dict):
            raise ConfigError("match must be an object")
        try:
            path = re.compile(match["path"]) if match.get("path") else None
        except (re.error, TypeError) as exc:
            raise ConfigError(f"match.path is not a valid regular expression: {exc}") from exc
        rate = spec.get("rate")
        if rate is not None and (not isinstance(rate, int | float) or not 0 <= rate <= 1):
            raise ConfigError("rate must be a number between 0 and 1")
        status = _opt_int(spec, "status", 400, 599)
        drop = bool(spec.get("drop_connection", False))
        reset = bool(spec.get("reset_connection", False))
        delay = _opt_int(spec, "delay_ms", 0, 600_000) or 0
        resync = bool(spec.get("resync", False))
        if status is None and not drop and not reset and not delay and not resync:
            raise ConfigError(
                "a fault needs status, delay_ms, drop_connection, reset_connection or resync"
            )
        after = bool(spec.get("after_processing", False))
        if after and not (drop or reset):
            raise ConfigError("after_processing needs drop_connection or reset_connection")
        connection = match.get("connection")
        if connection not in (None, "reused", "new"):
            raise ConfigError('match.connection must be "reused" or "new"')
        diagnostics = spec.get("diagnostics")
        if diagnostics is not None and not isinstance(diagnostics, str):
            raise ConfigError("diagnostics must be a string (the X-Ms-diagnostics value)")
        fault = Fault(
            id=str(next(self._ids)),
            method=str(match["method"]).upper() if match.get("method") else None,
            path=path,
            kind=str(match.get("rel") or match.get("kind") or "") or None,
            status=status,
            code=spec.get("code"),
            subcode=spec.get("subcode"),
            message=str(spec.get("message") or "Injected fault."),
            retry_after=_opt_int(spec, "retry_after", 0, 86_400),
            delay_ms=delay,
            drop_connection=drop,
            resync=resync,
            times=_opt_int(spec, "times", 1, 1_000_000),
            rate=float(rate) if rate is not None else None,
            reset_connection=reset,
            after_processing=after,
            connection=connection,
            diagnostics=diagnostics,
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.describe() for f in self._faults]

    def remove(self, fault_id: str) -> bool:
        with self._lock:
            before = len(self._faults)
            self._faults = [f for f in self._faults if f.id != fault_id]
            return len(self._faults) != before

    def clear(self) -> None:
        with self._lock:
            self._faults = []

    def match(
        self,
        method: str,
        path: str,
        kind: str,
        eligible: Callable[[Fault], bool] | None = None,
        reused: bool = False,
    ) -> Fault | None:
        """The first rule that fires for this request; ``eligible`` may veto a rule."""
        with self._lock:
            for fault in self._faults:
                if not fault.matches(method, path, kind, reused):
                    continue
                if eligible is not None and not eligible(fault):
                    continue
                if fault.rate is not None and random.random() >= fault.rate:
                    continue
                fault.hits += 1
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                return fault
        return None

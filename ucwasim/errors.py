"""The simulator's one exception tree.

SimError
 ├── ConfigError      bad configuration (start-up, control API input)
 ├── ControlError     a /_sim/ request that cannot be honoured (status + message)
 └── UcwaError        a UCWA error response: status, code, subcode, message, headers
      ├── OAuthError     400 from the token endpoint with an OAuth ``error`` body
      └── Unauthorized   401 with the HTML body and the two WWW-Authenticate challenges
"""

from __future__ import annotations

from typing import Any


class SimError(Exception):
    """Base of every error the simulator raises on purpose."""


class ConfigError(SimError):
    """Invalid configuration or control input."""


class ControlError(SimError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class UcwaError(SimError):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        subcode: str | None = None,
        headers: dict[str, str] | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}/{subcode}: {message}")
        self.status = status
        self.code = code
        self.subcode = subcode
        self.message = message
        self.headers = headers or {}
        self.parameters = parameters

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code}
        if self.subcode:
            out["subcode"] = self.subcode
        out["message"] = self.message
        if self.parameters:
            out["parameters"] = self.parameters
        return out


class OAuthError(UcwaError):
    """A token endpoint failure: 400 with an OAuth ``{"error": ...}`` body, never cached."""

    def __init__(
        self, error: str, diagnostics: str | None = None, extra: dict[str, str] | None = None
    ) -> None:
        headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
        if diagnostics:
            headers["X-Ms-diagnostics"] = diagnostics
        super().__init__(400, "BadRequest", error, headers=headers)
        self.error = error
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        return {"error": self.error, **self.extra}


class Unauthorized(UcwaError):
    def __init__(self) -> None:
        super().__init__(401, "Unauthorized", "No valid security token.")


def bad_parameter(name: str, message: str) -> UcwaError:
    return UcwaError(
        400,
        "BadRequest",
        message,
        subcode="ParameterValidationFailure",
        parameters={"property": [{"name": name, "reason": message}]},
    )


def not_found(message: str = "The requested resource could not be found.") -> UcwaError:
    return UcwaError(404, "NotFound", message, subcode="ResourceNotFound")


def conflict(message: str, subcode: str | None = None) -> UcwaError:
    return UcwaError(409, "Conflict", message, subcode=subcode)

"""Per-request context and response helpers shared by the UCWA handlers.

Input is parsed leniently (case-insensitive keys, query parameters as input), typed strictly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from werkzeug.wrappers import Request, Response

from ucwasim.errors import UcwaError, bad_parameter
from ucwasim.model import Account, Application
from ucwasim.switchboard import Switchboard
from ucwasim.world import World

JSON_TYPES = ("application/json", "application/vnd.microsoft.com.ucwa+json")


@dataclass
class Ctx:
    request: Request
    world: World
    board: Switchboard
    base_url: str
    account: Account | None = None
    app: Application | None = None
    dispatch: Callable[[Request], Response] | None = None

    @property
    def application(self) -> Application:
        assert self.app is not None
        return self.app

    @property
    def user(self) -> Account:
        assert self.account is not None
        return self.account

    def query(self, name: str) -> str | None:
        for key, value in self.request.args.items():
            if key.lower() == name.lower():
                return value
        return None

    def media_type(self) -> str:
        return (self.request.mimetype or "").lower()

    def body_bytes(self) -> bytes:
        return self.request.get_data(cache=True)

    def input(self) -> dict[str, Any]:
        """POST/PUT input: query parameters, overridden by a JSON body; keys lower-cased."""
        values: dict[str, Any] = {k.lower(): v for k, v in self.request.args.items()}
        raw = self.body_bytes()
        if not raw.strip():
            return values
        if self.media_type() not in JSON_TYPES:
            raise unsupported_media_type(self.media_type() or "none")
        try:
            body = json.loads(raw.decode("utf-8-sig"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise UcwaError(
                400,
                "BadRequest",
                "The request body could not be deserialized.",
                subcode="DeserializationFailure",
            ) from exc
        if not isinstance(body, dict):
            raise UcwaError(
                400,
                "BadRequest",
                "The request body must be a JSON object.",
                subcode="DeserializationFailure",
            )
        values.update({str(k).lower(): v for k, v in body.items()})
        return values


def unsupported_media_type(media: str) -> UcwaError:
    return UcwaError(415, "UnsupportedMediaType", f"The media type {media} is not supported.")


def optional_text(values: dict[str, Any], name: str, limit: int) -> str | None:
    value = values.get(name.lower())
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_parameter(name, f"{name} must be a string.")
    if len(value) > limit:
        raise bad_parameter(name, f"{name} must be at most {limit} characters.")
    return value


def required_text(values: dict[str, Any], name: str, limit: int) -> str:
    value = optional_text(values, name, limit)
    if value is None or not value.strip():
        raise bad_parameter(name, f"{name} is required.")
    return value


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, ensure_ascii=False),
        status=status,
        headers=headers,
        content_type="application/json; charset=utf-8",
    )


def empty(status: int = 204, headers: dict[str, str] | None = None) -> Response:
    return Response(b"", status=status, headers=headers)


# Not cacheable, as in the error traces (ExtendAPresenceSubscription.md: a 404 with
# "Expires: -1", "Cache-Control: no-cache", "Pragma: no-cache").
NO_CACHE = {"Expires": "-1", "Cache-Control": "no-cache", "Pragma": "no-cache"}


def error_response(err: UcwaError) -> Response:
    return json_response(err.body(), err.status, {**NO_CACHE, **err.headers})

import json
from datetime import UTC, datetime, timedelta

import pytest

from bridge.ucwa import errors as e
from bridge.ucwa.errors import error_from_response, lookup, parse_retry_after

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
APP = "https://lyncweb.contoso.com/ucwa/oauth/v1/applications/102"


def err(status: int, body: object = None, headers: dict[str, str] | None = None) -> e.UcwaError:
    text = body if isinstance(body, str) or body is None else json.dumps(body)
    return error_from_response(status, headers or {}, text, "GET", f"{APP}/events?ack=3", NOW)


@pytest.mark.parametrize(
    ("status", "code", "subcode", "cls"),
    [
        (404, "NotFound", "ApplicationNotFound", e.ApplicationGone),
        (410, "Gone", "InactiveApplicationExpired", e.ApplicationGone),
        (410, "Gone", "TooManyApplications", e.TooManyApplications),
        (410, "Gone", "UserAgentNotAllowed", e.UserAgentNotAllowed),
        (410, "Gone", "CannotRedirect", e.PoolUnavailable),
        (409, "Conflict", "PGetReplaced", e.PGetReplaced),
        (409, "Conflict", "AlreadyExists", e.AlreadyExists),
        (409, "Conflict", "MakeMeAvailableRequired", e.MakeMeAvailableRequired),
        (409, "Conflict", "AnotherOperationPending", e.AnotherOperationPending),
        (409, "Conflict", None, e.Conflict),
        (404, "NotFound", None, e.ResourceNotFound),
        (404, "NotFound", "APIVersionNotSupported", e.ResourceNotFound),
        (400, "BadRequest", "ParameterValidationFailure", e.ParameterValidationFailure),
        (400, "BadRequest", "DeserializationFailure", e.BadRequest),
        (413, "EntityTooLarge", None, e.EntityTooLarge),
        (403, "Forbidden", "AnonymousNotAllowed", e.Forbidden),
        (412, "PreconditionFailed", None, e.PreconditionFailed),
        (428, "PreconditionRequired", None, e.PreconditionFailed),
        (429, "TooManyRequests", None, e.Throttled),
        (503, "ServiceUnavailable", None, e.Throttled),
        (500, "ServiceFailure", "CallbackChannelError", e.ServiceFailure),
        (502, None, None, e.ServiceFailure),
        (504, "Timeout", None, e.ServiceFailure),
        (418, "Teapot", None, e.UnknownUcwaError),
    ],
)
def test_registry_maps_status_code_subcode(
    status: int, code: str | None, subcode: str | None, cls: type[e.UcwaError]
) -> None:
    body = {"code": code, "subcode": subcode, "message": "m"} if code else ""
    error = err(status, body)
    assert type(error) is cls
    assert error.status == status
    assert error.code == code
    assert error.subcode == subcode


def test_unknown_subcode_falls_back_to_status_class() -> None:
    error = err(409, {"code": "Conflict", "subcode": "BrandNewSubcode2030"})
    assert type(error) is e.Conflict
    assert error.subcode == "BrandNewSubcode2030"


def test_subcode_match_is_case_insensitive() -> None:
    assert type(lookup(404, "notfound", "applicationnotfound")) is type(e.ApplicationGone)
    assert lookup(404, "notfound", "applicationnotfound") is e.ApplicationGone


def test_unknown_fallback_keeps_raw_status_and_body() -> None:
    error = err(307, "<html>moved</html>")
    assert isinstance(error, e.UnknownUcwaError)
    assert error.status == 307
    assert error.body == "<html>moved</html>"
    assert error.permanent


def test_html_401_body() -> None:
    html = "<html><head><title>401 - Unauthorized</title></head><body>Denied</body></html>"
    error = err(401, html, {"WWW-Authenticate": 'MsRtcOAuth href="https://h/t"'})
    assert type(error) is e.AuthenticationRequired
    assert error.needs_reauth and not error.permanent
    assert error.code is None
    assert error.body == html
    assert "non-JSON" in error.message


def test_empty_body() -> None:
    error = err(500, "")
    assert type(error) is e.ServiceFailure
    assert error.retryable
    assert error.message == "HTTP 500"


def test_invalid_json_body_is_kept_raw() -> None:
    error = err(400, '{"code": "BadRequest", trunc')
    assert type(error) is e.BadRequest
    assert error.code is None
    assert error.body == '{"code": "BadRequest", trunc'


def test_long_body_is_truncated() -> None:
    assert len(err(500, "x" * 10000).body or "") == 2000


def test_oauth_token_errors() -> None:
    assert type(err(400, {"error": "invalid_grant"})) is e.CredentialsRejected
    assert type(err(400, {"error": "unsupported_grant_type"})) is e.GrantNotSupported
    assert type(err(400, {"error": "invalid_request"})) is e.InvalidTokenRequest
    assert type(err(400, {"error": "invalid_scope"})) is e.GrantNotSupported
    server = err(500, {"error": "server_error"})
    assert type(server) is e.TokenServiceFailure and server.retryable
    rejected = err(400, {"error": "invalid_grant", "error_description": "bad password"})
    assert rejected.permanent and not rejected.retryable and not rejected.needs_reauth
    assert rejected.message == "bad password"


def test_web_ticket_invalid_and_invalid_token_mean_reauth() -> None:
    ticket = err(
        500, "", {"X-Ms-diagnostics": '28032;source="x";reason="The web ticket is invalid."'}
    )
    assert type(ticket) is e.WebTicketInvalid and ticket.needs_reauth
    assert ticket.diagnostics and ticket.diagnostics.startswith("28032")
    token = err(403, "", {"Warning": '120 lyncweb "InvalidToken"'})
    assert type(token) is e.AuthenticationRequired


def test_retry_after_seconds_and_http_date() -> None:
    throttled = err(429, {"code": "TooManyRequests"}, {"retry-after": "30"})
    assert isinstance(throttled, e.Throttled)
    assert throttled.retry_after == 30
    assert throttled.retry_at == NOW + timedelta(seconds=30)
    dated = err(503, "", {"Retry-After": "Wed, 01 May 2024 12:02:00 GMT"})
    assert dated.retry_after == 120
    past = err(503, "", {"Retry-After": "Wed, 01 May 2024 11:00:00 GMT"})
    assert past.retry_after == 0
    junk = err(503, "", {"Retry-After": "soon"})
    assert junk.retry_after is None and junk.retry_at is None


def test_parse_retry_after_edge_cases() -> None:
    assert parse_retry_after(None, NOW) is None
    assert parse_retry_after("-5", NOW) is None
    assert parse_retry_after("nan", NOW) is None
    assert parse_retry_after(" 1.5 ", NOW) == NOW + timedelta(seconds=1.5)


def test_category_flags() -> None:
    gone = err(404, {"code": "NotFound", "subcode": "ApplicationNotFound"})
    assert gone.needs_rebuild and not gone.retryable and not gone.permanent
    assert err(410, {"code": "Gone", "subcode": "TooManyApplications"}).permanent
    assert err(404, {"code": "NotFound"}).permanent
    assert e.TransportError("timed out").retryable
    assert isinstance(err(410, {"subcode": "CannotRedirect"}), e.ApplicationError)


def test_str_and_repr_carry_request_info_without_secrets() -> None:
    error = err(409, {"code": "Conflict", "subcode": "PGetReplaced", "message": "replaced"})
    text = str(error)
    assert text == f"PGetReplaced 409 Conflict/PGetReplaced: replaced (GET {APP}/events?ack=3)"
    assert "Authorization" not in repr(error)
    assert error.method == "GET" and error.url == f"{APP}/events?ack=3"


def test_errors_are_caught_by_level() -> None:
    with pytest.raises(e.Conflict):
        raise err(409, {"code": "Conflict", "subcode": "PGetReplaced"})
    with pytest.raises(e.AuthError):
        raise err(400, {"error": "invalid_grant"})
    with pytest.raises(e.UcwaError):
        raise err(500, "")

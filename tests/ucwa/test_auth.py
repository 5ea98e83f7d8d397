import json
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

import pytest

from bridge.ucwa import errors as e
from bridge.ucwa.auth import Credentials, MsRtcOAuth, Token, drive, token_request
from bridge.ucwa.challenge import MsRtcOAuthChallenge
from bridge.ucwa.messages import HttpRequest, HttpResponse

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
HOST = "https://lyncweb.contoso.com"
USER_URL = f"{HOST}/Autodiscover/AutodiscoverService.svc/root/oauth/user"
TOKEN_URL = f"{HOST}/WebTicket/oauthtoken"
SECRET = "p&ss+w%rd=1"
CHALLENGE = (
    ("WWW-Authenticate", 'Bearer trusted_issuers="", client_id="00000004"'),
    (
        "WWW-Authenticate",
        f'MsRtcOAuth href="{TOKEN_URL}",grant_type="urn:microsoft.rtc:windows,password"',
    ),
)
HTML_401 = "<html><body>401 - Unauthorized</body></html>"


def unauthorized(headers: tuple[tuple[str, str], ...] = CHALLENGE) -> HttpResponse:
    return HttpResponse(401, headers, HTML_401)


def token_ok(token: str = "cwt=AAEBsecret", expires_in: int = 28289) -> HttpResponse:
    body = {"access_token": token, "expires_in": expires_in, "token_type": "Bearer"}
    return HttpResponse(200, {"Content-Type": "application/json"}, json.dumps(body))


def make_auth() -> MsRtcOAuth:
    return MsRtcOAuth(Credentials("lenea@contoso.com", SECRET), clock=lambda: NOW)


def test_challenge_grant_and_bearer_retry() -> None:
    auth = make_auth()
    flow = auth.auth_flow(HttpRequest("GET", USER_URL, headers={"Accept": "application/json"}))

    first = next(flow)
    assert first.method == "GET" and first.url == USER_URL
    assert first.header("Authorization") is None

    grant = flow.send(unauthorized())
    assert grant.method == "POST" and grant.url == TOKEN_URL
    assert grant.header("Content-Type") == "application/x-www-form-urlencoded;charset=UTF-8"
    body = grant.encoded_body() or ""
    assert "p%26ss%2Bw%25rd%3D1" in body
    assert "lenea%40contoso.com" in body
    assert parse_qs(body) == {
        "grant_type": ["password"],
        "username": ["lenea@contoso.com"],
        "password": [SECRET],
    }

    retried = flow.send(token_ok())
    assert retried.url == USER_URL
    assert retried.header("Authorization") == "Bearer cwt=AAEBsecret"
    assert retried.header("Accept") == "application/json"

    user = HttpResponse(200, (), '{"_links":{}}')
    with pytest.raises(StopIteration) as done:
        flow.send(user)
    assert done.value.value is user
    token = auth.tokens["lyncweb.contoso.com"]
    assert token.expires_at == NOW + timedelta(seconds=28289)


def test_existing_token_is_sent_and_no_challenge_needed() -> None:
    auth = make_auth()
    auth.tokens["lyncweb.contoso.com"] = Token(
        "cwt=T", NOW + timedelta(hours=1), "lyncweb.contoso.com"
    )
    flow = auth.auth_flow(HttpRequest("GET", f"{HOST}/ucwa/oauth/v1/applications"))
    assert next(flow).header("Authorization") == "Bearer cwt=T"
    ok = HttpResponse(200)
    with pytest.raises(StopIteration) as done:
        flow.send(ok)
    assert done.value.value is ok


def test_token_not_sent_to_another_host() -> None:
    auth = make_auth()
    auth.tokens["lyncweb.contoso.com"] = Token(
        "cwt=T", NOW + timedelta(hours=1), "lyncweb.contoso.com"
    )
    stale = HttpRequest(
        "GET", "https://pool2.contoso.com/ucwa", headers={"Authorization": "Bearer x"}
    )
    assert next(auth.auth_flow(stale)).header("Authorization") is None


def test_token_inside_an_explicit_renew_margin_is_not_used() -> None:
    auth = MsRtcOAuth(
        Credentials("u", SECRET), clock=lambda: NOW, renew_margin=timedelta(minutes=5)
    )
    auth.tokens["lyncweb.contoso.com"] = Token(
        "cwt=T", NOW + timedelta(minutes=2), "lyncweb.contoso.com"
    )
    assert next(auth.auth_flow(HttpRequest("GET", USER_URL))).header("Authorization") is None


def run(auth: MsRtcOAuth, responses: list[HttpResponse]) -> tuple[list[HttpRequest], object]:
    sent: list[HttpRequest] = []
    queue = list(responses)

    def send(request: HttpRequest) -> HttpResponse:
        sent.append(request)
        return queue.pop(0)

    result = drive(auth.auth_flow(HttpRequest("GET", USER_URL)), send)
    return sent, result


def test_invalid_grant_is_credentials_rejected_and_not_retried() -> None:
    bad = HttpResponse(400, {"Content-Type": "application/json"}, '{"error":"invalid_grant"}')
    with pytest.raises(e.CredentialsRejected) as caught:
        run(make_auth(), [unauthorized(), bad])
    error = caught.value
    assert error.permanent and not error.retryable
    assert SECRET not in str(error) and SECRET not in repr(error)


def test_401_after_fresh_token_is_credentials_rejected() -> None:
    with pytest.raises(e.CredentialsRejected):
        run(make_auth(), [unauthorized(), token_ok(), unauthorized()])


@pytest.mark.parametrize(
    ("error", "cls", "retryable"),
    [
        ("unsupported_grant_type", e.GrantNotSupported, False),
        ("invalid_request", e.InvalidTokenRequest, False),
        ("server_error", e.TokenServiceFailure, True),
    ],
)
def test_token_error_mapping(error: str, cls: type[e.UcwaError], retryable: bool) -> None:
    response = HttpResponse(400, (), json.dumps({"error": error}))
    with pytest.raises(cls) as caught:
        run(make_auth(), [unauthorized(), response])
    assert caught.value.retryable is retryable


def test_token_endpoint_401_is_credentials_rejected() -> None:
    with pytest.raises(e.CredentialsRejected):
        run(make_auth(), [unauthorized(), HttpResponse(401, (), "<html/>")])


def test_401_without_msrtc_challenge() -> None:
    with pytest.raises(e.AuthenticationRequired):
        run(make_auth(), [unauthorized((("WWW-Authenticate", "Negotiate"),))])


def test_password_grant_not_offered() -> None:
    headers = (
        (
            "WWW-Authenticate",
            f'MsRtcOAuth href="{TOKEN_URL}",grant_type="urn:microsoft.rtc:windows"',
        ),
    )
    with pytest.raises(e.GrantNotSupported):
        run(make_auth(), [unauthorized(headers)])


def test_token_response_without_access_token() -> None:
    with pytest.raises(e.ProtocolViolation):
        run(make_auth(), [unauthorized(), HttpResponse(200, (), '{"expires_in": 5}')])


def test_web_ticket_invalid_drops_token_and_reauthenticates() -> None:
    auth = make_auth()
    auth.tokens["lyncweb.contoso.com"] = Token(
        "cwt=OLD", NOW + timedelta(hours=1), "lyncweb.contoso.com"
    )
    ticket = HttpResponse(500, {"X-Ms-diagnostics": '28032;reason="The web ticket is invalid."'})
    final = HttpResponse(201)
    sent, result = run(auth, [ticket, unauthorized(), token_ok("cwt=NEW"), final])
    assert result is final
    assert [r.header("Authorization") for r in sent] == [
        "Bearer cwt=OLD",
        None,
        None,
        "Bearer cwt=NEW",
    ]


def test_non_401_errors_are_returned_to_the_caller() -> None:
    gone = HttpResponse(410, (), '{"code":"Gone","subcode":"InactiveApplicationExpired"}')
    sent, result = run(make_auth(), [gone])
    assert result is gone and len(sent) == 1


def test_token_value_object() -> None:
    token = Token("cwt=SECRETVALUE", NOW + timedelta(hours=8), "lyncweb.contoso.com")
    assert not token.should_renew(NOW, timedelta(minutes=5))
    assert token.should_renew(NOW + timedelta(hours=7, minutes=56), timedelta(minutes=5))
    assert token.is_expired(NOW + timedelta(hours=8))
    assert "SECRETVALUE" not in repr(token) and "SECRETVALUE" not in str(token)
    assert token.authorization() == "Bearer cwt=SECRETVALUE"


def test_secrets_never_in_reprs() -> None:
    creds = Credentials("u", SECRET)
    assert SECRET not in repr(creds) and SECRET not in str(creds)
    request = token_request(MsRtcOAuthChallenge(TOKEN_URL, ("password",)), creds)
    authed = request.with_header("Authorization", "Bearer cwt=SECRETVALUE")
    assert SECRET not in repr(authed) and "SECRETVALUE" not in repr(authed)
    auth = make_auth()
    auth.tokens["h"] = Token("cwt=SECRETVALUE", NOW, "h")
    assert "SECRETVALUE" not in repr(auth) and SECRET not in repr(auth)


def test_response_helpers() -> None:
    response = HttpResponse(200, (("A", "1"), ("a", "2")), '\ufeff{"x": 1}')
    assert response.header("a") == "2"
    assert response.header_values("A") == ["1", "2"]
    assert response.header_map() == {"a": "1, 2"}
    assert response.json() == {"x": 1}
    assert HttpResponse(401, (), HTML_401).json() is None
    assert HttpResponse(204).json() is None


def test_a_short_lived_token_is_used_until_it_expires() -> None:
    auth = make_auth()
    auth.tokens["lyncweb.contoso.com"] = Token(
        "cwt=SHORT", NOW + timedelta(seconds=10), "lyncweb.contoso.com"
    )
    ok = HttpResponse(200, (), "{}")
    sent, result = run(auth, [ok])
    assert result is ok and [r.header("Authorization") for r in sent] == ["Bearer cwt=SHORT"]
    later = MsRtcOAuth(Credentials("u", SECRET), clock=lambda: NOW + timedelta(seconds=10))
    later.tokens = dict(auth.tokens)
    assert later.token_for("lyncweb.contoso.com") is None  # expired: the next request is challenged

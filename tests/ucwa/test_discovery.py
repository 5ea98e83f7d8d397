import json
from datetime import UTC, datetime

import pytest

from bridge.ucwa import errors as e
from bridge.ucwa.auth import Credentials, MsRtcOAuth, drive
from bridge.ucwa.discovery import Discovery, discovery_urls, is_trusted, sip_domain
from bridge.ucwa.messages import HttpRequest, HttpResponse

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
WEB = "https://lyncweb.contoso.com"
ROOT = f"{WEB}/Autodiscover/AutodiscoverService.svc/root"
USER = f"{ROOT}/oauth/user"
APPS = f"{WEB}/ucwa/oauth/v1/applications"


def hal(**rels: str) -> HttpResponse:
    body = {"_links": {rel: {"href": href} for rel, href in rels.items()}}
    return HttpResponse(200, {"Content-Type": "application/json"}, json.dumps(body))


def challenge(host: str) -> HttpResponse:
    value = f'MsRtcOAuth href="https://{host}/WebTicket/oauthtoken",grant_type="password"'
    return HttpResponse(401, (("WWW-Authenticate", value),), "<html>401</html>")


def token(value: str) -> HttpResponse:
    return HttpResponse(200, (), json.dumps({"access_token": value, "expires_in": 28800}))


class Server:
    """Answers by URL from a script; records every request."""

    def __init__(self, script: dict[str, list[HttpResponse | Exception]]) -> None:
        self.script = script
        self.sent: list[HttpRequest] = []

    def __call__(self, request: HttpRequest) -> HttpResponse:
        self.sent.append(request)
        answer = self.script[request.url].pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def discover(
    script: dict[str, list[HttpResponse | Exception]], **kw: object
) -> tuple[object, Server]:
    auth = MsRtcOAuth(Credentials("lenea@contoso.com", "pw"), clock=lambda: NOW)
    server = Server(script)
    result = drive(Discovery("sip:lenea@contoso.com", auth, **kw).flow(), server)  # type: ignore[arg-type]
    return result, server


def test_helpers() -> None:
    assert sip_domain("sip:Lenea@Contoso.com") == "contoso.com"
    assert discovery_urls("lenea@contoso.com") == [
        "https://lyncdiscoverinternal.contoso.com",
        "https://lyncdiscover.contoso.com",
    ]
    assert len(discovery_urls("a@b.c", allow_http=True)) == 4
    with pytest.raises(ValueError):
        sip_domain("nobody")
    assert is_trusted("https://lyncweb.contoso.com/x", ["contoso.com"])
    assert not is_trusted("https://contoso.com.evil.net/x", ["contoso.com"])
    assert not is_trusted("https://evilcontoso.com/x", ["contoso.com"])
    assert not is_trusted("http://lyncweb.contoso.com/x", ["contoso.com"])


def test_internal_fails_external_root_user_auth_applications() -> None:
    result, server = discover(
        {
            "https://lyncdiscoverinternal.contoso.com": [e.TransportError("connect timeout")],
            "https://lyncdiscover.contoso.com": [hal(self=ROOT, user=USER, xframe=f"{WEB}/x")],
            USER: [challenge("lyncweb.contoso.com"), hal(self=USER, applications=APPS)],
            "https://lyncweb.contoso.com/WebTicket/oauthtoken": [token("cwt=A")],
        }
    )
    assert result.applications_url == APPS  # type: ignore[attr-defined]
    assert [r.url for r in server.sent][-1] == USER
    assert server.sent[-1].header("Authorization") == "Bearer cwt=A"


def test_root_redirect_link_is_followed() -> None:
    other = "https://lyncdiscover.pool2.contoso.com/root"
    result, _ = discover(
        {
            "https://lyncdiscoverinternal.contoso.com": [HttpResponse(404)],
            "https://lyncdiscover.contoso.com": [hal(redirect=other)],
            other: [hal(user=USER)],
            USER: [
                challenge("lyncweb.contoso.com"),
                hal(applications="/ucwa/oauth/v1/applications"),
            ],
            "https://lyncweb.contoso.com/WebTicket/oauthtoken": [token("cwt=A")],
        }
    )
    assert result.applications_url == APPS  # type: ignore[attr-defined]


def test_user_redirect_to_other_pool_reauthenticates_there() -> None:
    pool2_user = "https://pool2.contoso.com/Autodiscover/AutodiscoverService.svc/root/oauth/user"
    pool2_apps = "https://pool2.contoso.com/ucwa/oauth/v1/applications"
    result, server = discover(
        {
            "https://lyncdiscoverinternal.contoso.com": [hal(user=USER)],
            USER: [
                challenge("lyncweb.contoso.com"),
                hal(redirect="https://pool2.contoso.com/root"),
            ],
            "https://lyncweb.contoso.com/WebTicket/oauthtoken": [token("cwt=A")],
            "https://pool2.contoso.com/root": [hal(user=pool2_user)],
            pool2_user: [challenge("pool2.contoso.com"), hal(applications=pool2_apps)],
            "https://pool2.contoso.com/WebTicket/oauthtoken": [token("cwt=B")],
        }
    )
    assert result.applications_url == pool2_apps  # type: ignore[attr-defined]
    for request in server.sent:
        if request.host == "pool2.contoso.com":
            assert request.header("Authorization") != "Bearer cwt=A"
    assert server.sent[-1].header("Authorization") == "Bearer cwt=B"


def test_untrusted_redirect_is_refused() -> None:
    with pytest.raises(e.DiscoveryFailed) as caught:
        discover(
            {
                "https://lyncdiscoverinternal.contoso.com": [
                    HttpResponse(302, {"Location": "https://lyncdiscover.evil.net/"})
                ],
                "https://lyncdiscover.contoso.com": [hal(redirect="https://evil.net/root")],
            }
        )
    assert "untrusted" in str(caught.value)


def test_trusted_extra_domain_allows_hybrid_redirect() -> None:
    online = "https://webdir.online.lync.com/root"
    result, _ = discover(
        {
            "https://lyncdiscoverinternal.contoso.com": [hal(redirect=online)],
            online: [hal(user=f"{online}/oauth/user")],
            f"{online}/oauth/user": [hal(applications=APPS)],
        },
        trusted_domains=["online.lync.com"],
    )
    assert result.applications_url == APPS  # type: ignore[attr-defined]


def test_redirect_loop_hits_hop_limit() -> None:
    loop = "https://lyncweb.contoso.com/loop"
    with pytest.raises(e.DiscoveryFailed) as caught:
        discover(
            {
                "https://lyncdiscoverinternal.contoso.com": [hal(redirect=loop)],
                loop: [hal(redirect=loop)] * 3,
                "https://lyncdiscover.contoso.com": [HttpResponse(404)],
            },
            max_hops=4,
        )
    assert "more than 4 discovery hops" in str(caught.value)


def test_bad_credentials_stop_discovery_at_once() -> None:
    with pytest.raises(e.CredentialsRejected):
        discover(
            {
                "https://lyncdiscoverinternal.contoso.com": [hal(user=USER)],
                USER: [challenge("lyncweb.contoso.com")],
                "https://lyncweb.contoso.com/WebTicket/oauthtoken": [
                    HttpResponse(400, (), '{"error":"invalid_grant"}')
                ],
            }
        )

"""Where the UCWA client may go: exact session origins, discovery domains, configured hosts;
and where the password may go in a grant."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bridge.ucwa import errors as e
from bridge.ucwa.auth import Credentials, MsRtcOAuth
from bridge.ucwa.messages import HttpRequest, HttpResponse
from bridge.ucwa.trust import Origin, TrustPolicy

POOL = "https://pool1.contoso.com/ucwa/oauth/v1/applications/123"


def test_origins_compare_scheme_host_and_port() -> None:
    assert Origin.of("https://Pool1.Contoso.com./x") == Origin.of("https://pool1.contoso.com:443/y")
    assert Origin.of("http://pool1.contoso.com/") != Origin.of("https://pool1.contoso.com/")
    for bad in ("ftp://pool1.contoso.com/", "/relative", "https://[::1", "https://h:99999/", ""):
        with pytest.raises(e.InvalidLink):
            Origin.of(bad)


def test_a_session_policy_allows_its_origin_only() -> None:
    policy = TrustPolicy.for_session(POOL)
    assert policy.allows("https://pool1.contoso.com/ucwa/oauth/v1/applications/123/events")
    for other in (
        "http://pool1.contoso.com/ucwa",  # downgrade
        "https://pool1.contoso.com:8443/ucwa",  # another port
        "https://pool2.contoso.com/ucwa",  # a sibling host
        "https://pool1.contoso.com.evil.example/ucwa",
        "https://evil.example/?https://pool1.contoso.com/",
        "https://pool1.contoso.com@evil.example/",
        "javascript:alert(1)",
    ):
        assert not policy.allows(other), other
    with pytest.raises(e.UntrustedLink, match=r"https://evil\.example:443"):
        policy.check("https://evil.example/steal?token=1")


def test_discovery_trusts_the_sip_domain_over_https_and_configured_hosts() -> None:
    policy = TrustPolicy.for_discovery(
        "https://lyncdiscover.contoso.com", ["contoso.com"], hosts=["webticket.fabrikam.com"]
    )
    assert policy.allows("https://pool9.contoso.com/x")
    assert policy.allows("https://webticket.fabrikam.com/WebTicket/oauthtoken")
    assert not policy.allows("http://pool9.contoso.com/x")
    assert not policy.allows("https://notcontoso.com/x")


def grant_flow(auth: MsRtcOAuth, token_url: str) -> HttpRequest:
    """What the flow sends after the 401 challenge naming ``token_url``."""
    challenge = f'MsRtcOAuth href="{token_url}",grant_type="password"'
    flow = auth.auth_flow(HttpRequest("GET", POOL))
    next(flow)
    return flow.send(HttpResponse(401, (("WWW-Authenticate", challenge),)))


def test_the_password_goes_to_the_challenged_origin() -> None:
    auth = MsRtcOAuth(Credentials("bot@contoso.com", "pw"), clock=lambda: datetime.now(UTC))
    grant = grant_flow(auth, "https://pool1.contoso.com/WebTicket/oauthtoken")
    assert grant.form is not None and grant.url.endswith("/WebTicket/oauthtoken")


@pytest.mark.parametrize(
    "token_url",
    [
        "https://evil.example/WebTicket/oauthtoken",
        "http://pool1.contoso.com/WebTicket/oauthtoken",  # downgrade to plain http
        "https://pool2.contoso.com/WebTicket/oauthtoken",  # not trusted unless configured
    ],
)
def test_the_password_never_goes_elsewhere(token_url: str) -> None:
    auth = MsRtcOAuth(Credentials("bot@contoso.com", "pw"))
    with pytest.raises(e.UntrustedLink, match="password grant"):
        grant_flow(auth, token_url)
    auth.trust = TrustPolicy(hosts=["webticket.contoso.com"])
    with pytest.raises(e.UntrustedLink, match="password grant"):
        grant_flow(auth, token_url)


def test_a_configured_token_host_receives_the_grant() -> None:
    auth = MsRtcOAuth(Credentials("bot@contoso.com", "pw"))
    auth.trust = TrustPolicy(hosts=["pool2.contoso.com"])
    grant = grant_flow(auth, "https://pool2.contoso.com/WebTicket/oauthtoken")
    assert grant.form is not None and grant.host == "pool2.contoso.com"

"""Autodiscovery, the MsRtcOAuth challenge and the token endpoint (CreateAnApplication.md 1-7).

These are the only resources with absolute hrefs.
"""

from __future__ import annotations

import math
from urllib.parse import urlencode

from werkzeug.datastructures import Headers
from werkzeug.wrappers import Response

from ucwasim import diagnostics
from ucwasim.context import NO_CACHE, Ctx, json_response
from ucwasim.errors import OAuthError

ROOT_PATH = "/Autodiscover/AutodiscoverService.svc/root"
POOL2_PREFIX = "/pool2"
TOKEN_PATH = "/WebTicket/oauthtoken"
XFRAME_PATH = "/Autodiscover/XFrame/XFrame.html"
APPLICATIONS_URL_PATH = "/ucwa/oauth/v1/applications"

ALLOWED_GRANTS = "urn:microsoft.rtc:windows,urn:microsoft.rtc:anonmeeting,password"
PASSIVE_GRANT = "urn:microsoft.rtc:passive"
PASSIVE_AUTH_PATH = "/PassiveAuth/PassiveAuth.aspx"

_UNAUTHORIZED_PAGE = (
    "<!DOCTYPE html><html><head><title>401 - Unauthorized</title></head><body>"
    "<h1>Server Error</h1><h2>401 - Unauthorized: Access is denied due to invalid credentials."
    "</h2><h3>You do not have permission to view this directory or page using the credentials "
    "that you supplied.</h3></body></html>"
)


def _domain_query(ctx: Ctx) -> str:
    return "?" + urlencode({"originalDomain": ctx.world.cfg.domain})


def root_url(base_url: str, domain: str) -> str:
    return f"{base_url}{ROOT_PATH}?{urlencode({'originalDomain': domain})}"


def root(ctx: Ctx, pooled: bool) -> Response:
    base = ctx.base_url
    query = _domain_query(ctx)
    if ctx.world.cfg.redirect and not pooled:
        return json_response(
            {
                "_links": {
                    "self": {"href": f"{base}{ROOT_PATH}{query}"},
                    "redirect": {"href": f"{base}{POOL2_PREFIX}{ROOT_PATH}{query}"},
                }
            },
            headers=NO_CACHE,
        )
    prefix = POOL2_PREFIX if pooled else ""
    return json_response(
        {
            "_links": {
                "self": {"href": f"{base}{prefix}{ROOT_PATH}{query}"},
                "user": {"href": f"{base}{prefix}{ROOT_PATH}/oauth/user{query}"},
                "xframe": {"href": f"{base}{XFRAME_PATH}"},
            }
        },
        # CreateAnApplication.md steps 2 and 8: root and user answers are not cacheable.
        headers=NO_CACHE,
    )


def challenge(base_url: str, domain: str, server_fqdn: str) -> Response:
    headers = Headers()
    headers.add(
        "WWW-Authenticate",
        f'Bearer trusted_issuers="00000002-0000-0ff1-ce00-000000000000@{domain}", '
        'client_id="00000004-0000-0ff1-ce00-000000000000"',
    )
    headers.add(
        "WWW-Authenticate",
        f'MsRtcOAuth href="{base_url}{TOKEN_PATH}",grant_type="{ALLOWED_GRANTS}"',
    )
    headers.add("X-Ms-diagnostics", diagnostics.header(diagnostics.NO_VALID_TOKEN, server_fqdn))
    return Response(_UNAUTHORIZED_PAGE, status=401, headers=headers, content_type="text/html")


def user(ctx: Ctx, pooled: bool) -> Response:
    """The user resource; the server checked the token before routing here."""
    base = ctx.base_url
    prefix = POOL2_PREFIX if pooled else ""
    return json_response(
        {
            "_links": {
                "self": {"href": f"{base}{prefix}{ROOT_PATH}/oauth/user{_domain_query(ctx)}"},
                "applications": {"href": f"{base}{APPLICATIONS_URL_PATH}"},
                "xframe": {"href": f"{base}{XFRAME_PATH}"},
            }
        },
        headers=NO_CACHE,
    )


def xframe(ctx: Ctx) -> Response:
    return Response("<!DOCTYPE html><html><body></body></html>", content_type="text/html")


def token(ctx: Ctx) -> Response:
    form = ctx.request.form if ctx.request.mimetype == "application/x-www-form-urlencoded" else {}
    grant = form.get("grant_type")
    if not grant:
        raise OAuthError("invalid_request")
    fqdn = ctx.world.cfg.server_fqdn
    if grant == PASSIVE_GRANT:
        # AuthenticationInUCWA.md, "Passive grant type": no token here; the client is sent to
        # the passive (ADFS) sign-in page, with 28020 ("No valid security token.").
        raise OAuthError(
            "invalid_grant",
            diagnostics.header(diagnostics.NO_VALID_TOKEN, fqdn),
            {"ms_rtc_passiveauthuri": f"{ctx.base_url}{PASSIVE_AUTH_PATH}"},
        )
    if grant != "password":
        # AuthenticationInUCWA.md, "Error conditions": a grant type the server does not allow.
        raise OAuthError(
            "unsupported_grant_type",
            diagnostics.header(diagnostics.AUTH_TYPE_NOT_ALLOWED, fqdn),
        )
    username, password = form.get("username"), form.get("password")
    if not username or password is None:
        raise OAuthError("invalid_request")
    name = username.split("\\")[-1]
    if "@" not in name:
        name = f"{name}@{ctx.world.cfg.domain}"
    account = ctx.world.account(name)
    if account is None or account.user.password != password:
        raise OAuthError("invalid_grant")
    ctx.account = account
    issued = ctx.world.issue_token(account)
    lifetime = ctx.world.scaled(ctx.world.cfg.token_lifetime)
    return json_response(
        {
            "access_token": issued.value,
            "expires_in": max(1, math.ceil(lifetime)),
            "ms_rtc_identityscope": "local",
            "token_type": "Bearer",
        },
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )

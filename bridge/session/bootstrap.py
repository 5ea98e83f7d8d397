"""Building the account's one UCWA application: discovery, token, application, makeMeAvailable.

A stable endpointId per account makes a restart re-attach to the same application (200).
Discovery may visit hosts under the SIP domain; afterwards only the application's origin (and the
token endpoint it challenged with) are trusted.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from bridge.session.client import UcwaClient
from bridge.ucwa import errors as ue
from bridge.ucwa.auth import drive
from bridge.ucwa.discovery import Discovery, sip_domain
from bridge.ucwa.links import embedded, link, resolve
from bridge.ucwa.messages import HttpRequest, HttpResponse
from bridge.ucwa.trust import TrustPolicy

USER_AGENT = "ucwa-bridge/0.1"
CULTURE = "en-US"

# Links workers and the poller use, taken from the application after makeMeAvailable.
_COMMUNICATION_RELS = ("startMessaging", "conversations", "self")
_ME_RELS = ("reportMyActivity", "makeMeAvailable", "self")


def endpoint_id(account: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ucwa-bridge:{account.lower()}"))


@dataclass
class Application:
    """The live application: absolute hrefs for everything the bridge follows."""

    base_url: str
    href: str
    events_href: str
    links: dict[str, str] = field(default_factory=dict)
    created: bool = False


class Bootstrap:
    """Runs the whole sign-in; every step follows links given by the server."""

    def __init__(
        self,
        client: UcwaClient,
        username: str,
        discovery_url: str,
        *,
        user_agent: str = USER_AGENT,
        formats: tuple[str, ...] = ("Plain", "Html"),
    ) -> None:
        self.client = client
        self.username = username
        self.discovery_url = discovery_url
        self.user_agent = user_agent
        self.formats = formats

    def discover(self) -> str:
        """The applications URL; then only its origin (and its token endpoint) are trusted."""
        host = (urlsplit(self.discovery_url).hostname or "").lower()
        oauth = self.client.oauth
        walk = TrustPolicy.for_discovery(
            self.discovery_url,
            (sip_domain(self.username), host),
            hosts=self.client.trust.hosts,
        )
        discovery = Discovery(
            self.username,
            oauth,
            trusted_domains=(host,),
            start_urls=[self.discovery_url],
            allow_http=self.discovery_url.startswith("http:"),
        )

        def send(request: HttpRequest) -> HttpResponse:
            walk.check(request.url, "discovery request")
            return self.client.transport.send(request, kind="discovery")

        oauth.trust = walk
        try:
            applications_url = drive(discovery.flow(), send).applications_url
        finally:
            oauth.trust = self.client.trust
        self.client.trust.add(applications_url)
        token_endpoint = oauth.token_endpoints.get(urlsplit(applications_url).hostname or "")
        if token_endpoint:
            self.client.trust.add(token_endpoint)
        return applications_url

    def create_application(self, applications_url: str) -> Application:
        body = {
            "userAgent": self.user_agent,
            "endpointId": endpoint_id(self.username),
            "culture": CULTURE,
        }
        response = self.client.request("POST", applications_url, json=body, kind="applications")
        resource = response.json() or {}
        href = link(resource, "self") or response.header("Location")
        if not href:
            raise ue.ProtocolViolation("application without a self link", url=applications_url)
        # The application's origin becomes the session's base URL: it must be a trusted one.
        absolute = self.client.trust.check(resolve(applications_url, href), "application link")
        app = self._application(applications_url, absolute, resource)
        app.created = response.status == 201
        return app

    def make_me_available(self, app: Application) -> None:
        href = app.links.get("makeMeAvailable")
        if not href:
            return  # already available: the link disappears after the first call
        body = {
            "SupportedModalities": ["Messaging"],
            "supportedMessageFormats": list(self.formats),
            "signInAs": "Online",
        }
        # A second call on a re-attached application answers AlreadyExists: already available.
        with contextlib.suppress(ue.AlreadyExists):
            self.client.request("POST", href, json=body, kind="makeMeAvailable")

    def refresh(self, app: Application) -> Application:
        resource = self.client.get_json(app.href, kind="application") or {}
        return self._application(app.href, app.href, resource)

    def run(self) -> Application:
        applications_url = self.discover()
        app = self.create_application(applications_url)
        self.make_me_available(app)
        created = app.created
        app = self.refresh(app)
        app.created = created
        if not app.links.get("startMessaging"):
            # An available application always offers it: an answer without it is garbled, and
            # publishing it would fail every send with no_session until the next rebuild.
            raise ue.ProtocolViolation(
                "application without a startMessaging link after makeMeAvailable", url=app.href
            )
        return app

    def _application(self, base: str, href: str, resource: dict[str, Any]) -> Application:
        parts = urlsplit(href)
        base_url = f"{parts.scheme}://{parts.netloc}"
        events = link(resource, "events")
        if not events:
            raise ue.ProtocolViolation("application without an events link", url=href)

        def trusted(value: str) -> str:
            # A link off the session's hosts is refused now, not when a send follows it.
            return self.client.trust.check(resolve(href, value), "application link")

        links: dict[str, str] = {"application": href}
        batch = link(resource, "batch")
        links["batch"] = trusted(batch) if batch else ""
        communication = embedded(resource, "communication")
        for rel in _COMMUNICATION_RELS:
            value = link(communication, rel)
            if value:
                links["communication" if rel == "self" else rel] = trusted(value)
        me = embedded(resource, "me")
        for rel in _ME_RELS:
            value = link(me, rel)
            if value:
                links["me" if rel == "self" else rel] = trusted(value)
        return Application(base_url, href, trusted(events), links)

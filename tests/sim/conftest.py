"""Fixtures for the simulator conformance tests: a live simulator and a link-following client.

The client never builds a UCWA URL: it starts from the discovery URL and follows rels.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urljoin

import pytest
import requests

from ucwasim import SimConfig, Simulator, SimUser

Event = tuple[str, dict[str, Any]]

FAST = {"time_scale": 0.01}


def default_users() -> list[SimUser]:
    return [
        SimUser("sip:bot@contoso.com", "secret", name="Bot Account"),
        SimUser("sip:alice@contoso.com", "pw", name="Alice Adams"),
        SimUser("sip:echo@contoso.com", "pw", behaviour="echo"),
        SimUser("sip:decliner@contoso.com", "pw", behaviour="decline"),
        SimUser("sip:silent@contoso.com", "pw", behaviour="no-answer"),
        SimUser("sip:away@contoso.com", "pw", behaviour="offline"),
    ]


class Client:
    """A plain UCWA client for tests: discovery, token, application, event channel."""

    def __init__(self, sim: Simulator, sip: str, password: str) -> None:
        self.sim = sim
        self.sip = sip
        self.password = password
        self.http = requests.Session()
        self.token: str | None = None
        self.applications_url: str | None = None
        self.app: dict[str, Any] = {}
        self.app_url = ""
        self.next_events: str | None = None
        self.seen: list[Event] = []
        self.cursor = 0

    # -- plumbing ---------------------------------------------------------------------------

    def url(self, href: str) -> str:
        return urljoin(self.app_url or self.sim.base_url, href)

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        out = {"Accept": "application/json"}
        if self.token:
            out["Authorization"] = f"Bearer {self.token}"
        out.update(extra or {})
        return out

    def get(self, href: str, **kw: Any) -> requests.Response:
        return self.http.get(self.url(href), headers=self.headers(), timeout=30, **kw)

    def post(self, href: str, body: Any = None, **kw: Any) -> requests.Response:
        if body is not None:
            kw["json"] = body
        return self.http.post(
            self.url(href), headers=self.headers(kw.pop("headers", None)), timeout=30, **kw
        )

    def delete(self, href: str) -> requests.Response:
        return self.http.delete(self.url(href), headers=self.headers(), timeout=30)

    # -- bootstrap ----------------------------------------------------------------------------

    def discover(self) -> str:
        root = self.http.get(self.sim.discovery_url, headers=self.headers(), timeout=10).json()
        while "redirect" in root["_links"]:
            root = self.http.get(root["_links"]["redirect"]["href"], timeout=10).json()
        return str(root["_links"]["user"]["href"])

    def sign_in(self) -> None:
        user_url = self.discover()
        challenge = self.http.get(user_url, headers={"Accept": "application/json"}, timeout=10)
        assert challenge.status_code == 401
        header = ", ".join(challenge.raw.headers.getlist("WWW-Authenticate"))
        token_url = re.search(r'MsRtcOAuth href="([^"]+)"', header)
        assert token_url, header
        grant = {"grant_type": "password", "username": self.sip[4:], "password": self.password}
        reply = self.http.post(token_url.group(1), data=grant, timeout=10)
        assert reply.status_code == 200, reply.text
        self.token = reply.json()["access_token"]
        user = self.http.get(user_url, headers=self.headers(), timeout=10)
        assert user.status_code == 200
        self.applications_url = user.json()["_links"]["applications"]["href"]

    def create_app(self, endpoint: str | None = None) -> requests.Response:
        assert self.applications_url
        body = {
            "UserAgent": "SimTests/1.0",
            "EndpointId": endpoint or str(uuid.uuid4()),
            "Culture": "en-US",
        }
        reply = self.http.post(self.applications_url, json=body, headers=self.headers(), timeout=10)
        if reply.status_code in (200, 201):
            self.app = reply.json()
            self.app_url = urljoin(self.applications_url, self.app["_links"]["self"]["href"])
            self.next_events = self.app["_links"]["events"]["href"]
        return reply

    def start(self, available: bool = True, formats: list[str] | None = None) -> Client:
        self.sign_in()
        assert self.create_app().status_code == 201
        if available:
            body: dict[str, Any] = {"SupportedModalities": ["Messaging"]}
            if formats:
                body["supportedMessageFormats"] = formats
            reply = self.post(
                self.app["_embedded"]["me"]["_links"]["makeMeAvailable"]["href"], body
            )
            assert reply.status_code == 204, reply.text
            self.refresh()
        return self

    def refresh(self) -> dict[str, Any]:
        self.app = self.get(self.app["_links"]["self"]["href"]).json()
        return self.app

    def link(self, *path: str) -> str:
        """Follow embedded resources then a rel: link('communication', 'startMessaging')."""
        node: dict[str, Any] = self.app
        for name in path[:-1]:
            node = node["_embedded"][name]
        return str(node["_links"][path[-1]]["href"])

    # -- events ---------------------------------------------------------------------------------

    def poll(self, **params: Any) -> requests.Response:
        assert self.next_events
        reply = self.get(self.next_events, params=params or None)
        if reply.status_code == 200:
            body = reply.json()
            links = body["_links"]
            following = links.get("next") or links.get("resume") or links.get("resync")
            self.next_events = following["href"]
            for sender in body.get("sender", []):
                for event in sender["events"]:
                    self.seen.append((sender["rel"], event))
        return reply

    def wait_for(self, pred: Callable[[Event], bool], within: float = 5.0) -> Event:
        """Next event after the previous match that satisfies ``pred``, polling as needed."""
        start = self.cursor
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for index in range(self.cursor, len(self.seen)):
                if pred(self.seen[index]):
                    self.cursor = index + 1
                    return self.seen[index]
            reply = self.poll()
            assert reply.status_code == 200, reply.text
        raise AssertionError(f"no matching event; saw {summary(self.seen[start:])}")

    def drain(self, polls: int = 1) -> list[Event]:
        """Poll ``polls`` times; returns (and consumes) everything not matched before."""
        for _ in range(polls):
            self.poll()
        start, self.cursor = self.cursor, len(self.seen)
        return self.seen[start:]


def summary(events: list[Event]) -> list[str]:
    return [f"{s}:{e['link']['rel']}:{e['type']}" for s, e in events]


def is_event(rel: str, kind: str, **fields: Any) -> Callable[[Event], bool]:
    def check(item: Event) -> bool:
        _, event = item
        if event["link"]["rel"] != rel or event["type"] != kind:
            return False
        embedded = event.get("_embedded", {}).get(rel, {})
        return all(event.get(k) == v or embedded.get(k) == v for k, v in fields.items())

    return check


@pytest.fixture()
def make_sim() -> Iterator[Callable[..., Simulator]]:
    started: list[Simulator] = []

    def factory(**overrides: Any) -> Simulator:
        settings: dict[str, Any] = {"users": default_users(), **FAST, **overrides}
        sim = Simulator(SimConfig(**settings)).start()
        started.append(sim)
        return sim

    yield factory
    for sim in started:
        sim.stop()


@pytest.fixture()
def sim(make_sim: Callable[..., Simulator]) -> Simulator:
    return make_sim()


@pytest.fixture()
def client_for(sim: Simulator) -> Callable[[str, str], Client]:
    def factory(sip: str, password: str) -> Client:
        return Client(sim, sip, password)

    return factory


@pytest.fixture()
def bot(sim: Simulator) -> Client:
    return Client(sim, "sip:bot@contoso.com", "secret")

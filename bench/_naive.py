"""The baseline of ``send_path``: a naive UCWA client that follows SendAnIM.md step by step.

Per message: POST startMessaging (no first message), GET events until the invitation completes,
GET the conversation, POST sendMessage, GET events until the message completes, POST
stopMessaging: seven requests when each wait takes the documented number of event GETs.
It signs in as its own account with its own application and never builds a URL: it follows
the links the server gives it, like ``tests/sim/conftest.py``'s client.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin

import requests

from bench._common import BenchError


class NaiveClient:
    def __init__(self, discovery_url: str, sip: str, password: str) -> None:
        self.discovery_url = discovery_url
        self.timeout = 30.0
        self.sip = sip
        self.password = password
        self.http = requests.Session()
        self.token = ""
        self.app_url = ""
        self.app: dict[str, Any] = {}
        self.next_events = ""
        self.events: list[tuple[str, dict[str, Any]]] = []  # seen, not yet consumed

    # -- plumbing -----------------------------------------------------------------------------
    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json", "Authorization": f"Bearer {self.token}"}
        headers.update(extra or {})
        return headers

    def _url(self, href: str) -> str:
        return urljoin(self.app_url, href)

    def _check(self, response: requests.Response, *ok: int) -> requests.Response:
        if response.status_code not in ok:
            raise BenchError(
                f"baseline: {response.request.method} {response.url} answered "
                f"{response.status_code}: {response.text[:200]}"
            )
        return response

    # -- sign-in and application (not counted: done once) ------------------------------------
    def start(self) -> NaiveClient:
        root = self.http.get(self.discovery_url, timeout=10).json()
        while "redirect" in root["_links"]:
            root = self.http.get(root["_links"]["redirect"]["href"], timeout=10).json()
        user_url = str(root["_links"]["user"]["href"])
        challenge = self.http.get(user_url, headers={"Accept": "application/json"}, timeout=10)
        header = ", ".join(challenge.raw.headers.getlist("WWW-Authenticate"))
        found = re.search(r'MsRtcOAuth href="([^"]+)"', header)
        if not found:
            raise BenchError(f"baseline: no MsRtcOAuth challenge in {header!r}")
        grant = {"grant_type": "password", "username": self.sip[4:], "password": self.password}
        reply = self._check(self.http.post(found.group(1), data=grant, timeout=10), 200)
        self.token = reply.json()["access_token"]
        user = self._check(self.http.get(user_url, headers=self._headers(), timeout=10), 200)
        applications = str(user.json()["_links"]["applications"]["href"])
        body = {"UserAgent": "NaiveBench/1.0", "EndpointId": str(uuid.uuid4()), "Culture": "en-US"}
        created = self.http.post(applications, json=body, headers=self._headers(), timeout=10)
        self.app = self._check(created, 201).json()
        self.app_url = urljoin(applications, self.app["_links"]["self"]["href"])
        self.next_events = str(self.app["_links"]["events"]["href"])
        return self

    # -- the documented flow, per message -----------------------------------------------------
    def send(self, to: str, text: str) -> None:
        start_href = self.app["_embedded"]["communication"]["_links"]["startMessaging"]["href"]
        body = {
            "importance": "Normal",
            "subject": "Benchmark",
            "to": to,
            "operationId": str(uuid.uuid4()),
        }
        started = self.http.post(
            self._url(start_href), json=body, headers=self._headers(), timeout=self.timeout
        )
        invitation = self._check(started, 201).headers["Location"]
        done = self._wait(lambda rel, e: rel == "messagingInvitation" and _href(e) == invitation)
        if done.get("status") != "Success":
            raise BenchError(f"baseline: the invitation to {to} failed: {done.get('reason')}")
        links = done["_embedded"]["messagingInvitation"]["_links"]
        conversation = self.http.get(
            self._url(links["conversation"]["href"]), headers=self._headers(), timeout=self.timeout
        )
        self._check(conversation, 200)
        messaging = self._messaging_links(links["messaging"]["href"])
        sent = self.http.post(
            self._url(messaging["sendMessage"]["href"]),
            params={"OperationContext": str(uuid.uuid4())},
            data=text.encode(),
            headers=self._headers({"Content-Type": "text/plain; charset=utf-8"}),
            timeout=self.timeout,
        )
        message = self._check(sent, 201).headers["Location"]
        outcome = self._wait(lambda rel, e: rel == "message" and _href(e) == message)
        if outcome.get("status") != "Success":
            raise BenchError(f"baseline: the message to {to} failed: {outcome.get('reason')}")
        stop = self.http.post(
            self._url(messaging["stopMessaging"]["href"]),
            headers=self._headers(),
            timeout=self.timeout,
        )
        self._check(stop, 204)

    def _messaging_links(self, messaging_href: str) -> dict[str, Any]:
        """The sendMessage link came in a messaging event; GET messaging only if it did not."""
        for rel, event in reversed(self.events):
            embedded = event.get("_embedded", {}).get("messaging", {})
            same = rel == "messaging" and _href(event) == messaging_href
            if same and "sendMessage" in embedded.get("_links", {}):
                return dict(embedded["_links"])
        reply = self._check(
            self.http.get(self._url(messaging_href), headers=self._headers(), timeout=self.timeout),
            200,
        )
        return dict(reply.json()["_links"])

    # -- events -------------------------------------------------------------------------------
    def _wait(
        self, match: Callable[[str, dict[str, Any]], bool], timeout: float = 30.0
    ) -> dict[str, Any]:
        """GET events until an event ``type == completed`` matches; returns it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for rel, event in self.events:
                if event.get("type") == "completed" and match(rel, event):
                    self.events = [(r, e) for r, e in self.events if e is not event]
                    return event
            reply = self._check(
                self.http.get(self._url(self.next_events), headers=self._headers(), timeout=60),
                200,
            )
            batch = reply.json()
            following = batch["_links"].get("next") or batch["_links"].get("resync")
            if following is None:
                raise BenchError(f"baseline: event response without next: {batch['_links']}")
            self.next_events = str(following["href"])
            for sender in batch.get("sender", []):
                for event in sender.get("events", []):
                    self.events.append((str(event["link"]["rel"]), event))
            # Keep only what a later wait may still need.
            self.events = self.events[-200:]
        raise BenchError("baseline: timed out waiting for an event")


def _href(event: dict[str, Any]) -> str:
    return str(event.get("link", {}).get("href", ""))

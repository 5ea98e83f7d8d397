"""The baseline of ``send_path``: a naive UCWA client that follows SendAnIM.md step by step.

Per message (``send_with_own_application``): POST applications, POST startMessaging (no first
message), GET events until the invitation completes, GET the conversation, POST sendMessage,
GET events until the message completes, POST stopMessaging, DELETE the application. It signs
in once as its own account (the token is reused) and never builds a URL: it follows the links
the server gives it, like ``tests/sim/conftest.py``'s client.
"""

from __future__ import annotations

import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
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
        self.applications_url = ""
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

    # -- sign-in (once) and applications -----------------------------------------------------
    def start(self) -> NaiveClient:
        """Sign in and create one application for every later ``send``."""
        self.sign_in()
        self.create_application()
        return self

    def sign_in(self) -> NaiveClient:
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
        self.applications_url = str(user.json()["_links"]["applications"]["href"])
        return self

    def create_application(self) -> None:
        body = {"UserAgent": "NaiveBench/1.0", "EndpointId": str(uuid.uuid4()), "Culture": "en-US"}
        created = self.http.post(
            self.applications_url, json=body, headers=self._headers(), timeout=self.timeout
        )
        self.app = self._check(created, 201).json()
        self.app_url = urljoin(self.applications_url, self.app["_links"]["self"]["href"])
        self.next_events = str(self.app["_links"]["events"]["href"])
        self.events = []

    def delete_application(self) -> None:
        if not self.app_url:
            return
        deleted = self.http.delete(self.app_url, headers=self._headers(), timeout=self.timeout)
        self.app_url = ""
        self._check(deleted, 204)

    def send_with_own_application(self, to: str, text: str) -> float:
        """The documented flow with one application per send; returns when it was delivered."""
        self.create_application()
        try:
            return self.send(to, text)
        finally:
            self.delete_application()

    # -- the documented flow, per message -----------------------------------------------------
    def send(self, to: str, text: str) -> float:
        """Returns the time (``time.time()``) the message completed Success."""
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
        delivered = time.time()
        stop = self.http.post(
            self._url(messaging["stopMessaging"]["href"]),
            headers=self._headers(),
            timeout=self.timeout,
        )
        self._check(stop, 204)
        return delivered

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


class BaselinePool:
    """``threads`` naive clients, each signed in as its own account, working through one list
    of messages like RQ workers through a queue: one message at a time per thread, each with
    its own application (so the simulator's per-user application limit never binds)."""

    def __init__(self, discovery_url: str, accounts: Sequence[tuple[str, str]]) -> None:
        self.clients = [NaiveClient(discovery_url, sip, pw).sign_in() for sip, pw in accounts]

    def run(self, targets: Sequence[str], text: str, rate: float | None = None) -> list[float]:
        """Send one message to each target: all accepted at once (``rate`` None) or the i-th
        accepted at ``i / rate`` s; returns each message's accepted→delivered latency in ms."""
        started = time.time()
        accepted = [started + (i / rate if rate else 0.0) for i in range(len(targets))]
        latencies: list[float] = [math.nan] * len(targets)
        next_index = iter(range(len(targets)))
        lock = threading.Lock()
        failures: list[Exception] = []

        def work(client: NaiveClient) -> None:
            while not failures:
                with lock:
                    index = next(next_index, None)
                if index is None:
                    return
                time.sleep(max(0.0, accepted[index] - time.time()))
                try:
                    delivered = client.send_with_own_application(targets[index], text)
                except Exception as exc:  # raised again in the calling thread
                    failures.append(exc)
                    return
                latencies[index] = (delivered - accepted[index]) * 1000

        threads = [threading.Thread(target=work, args=(c,), daemon=True) for c in self.clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise BenchError(f"baseline: {failures[0]}")
        return latencies

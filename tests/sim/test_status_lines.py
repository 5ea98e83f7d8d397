"""Status lines carry the reason phrases of the reference traces (IIS writes "401 Unauthorized",
not "401 UNAUTHORIZED"): every status the simulator answers on its own, each fault status, and
the status lines inside a batch answer.

Phrases as shown: "200 OK", "201 Created", "204 No Content" (CreateAnApplication.md, SendAnIM.md),
"400 Bad Request" (AuthenticationInUCWA.md), "401 Unauthorized" (CreateAnApplication.md step 4),
"404 Not Found" (ExtendAPresenceSubscription.md), "304 Not Modified" (MeDashboard.md),
"409 Conflict" (ErrorsAndInformationalMessages.md), "410 Gone" (ApplicationDashboard.md),
"502 Bad Gateway" (RootURL.md); the rest as in the HTTP RFC that HTTP.md refers to.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import requests

from tests.sim.conftest import FAST, Client, default_users
from ucwasim import SimConfig, Simulator

EXPECTED = {
    200: "OK",
    201: "Created",
    204: "No Content",
    302: "Found",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    412: "Precondition Failed",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    428: "Precondition Required",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def check(seen: dict[int, str], reply: requests.Response, status: int) -> None:
    assert reply.status_code == status, (status, reply.text[:200])
    seen[status] = reply.reason


def test_every_status_the_simulator_answers_has_the_documented_phrase(make_sim) -> None:
    sim = make_sim(max_applications_per_user=1, max_body_bytes=10_000)
    bot = Client(sim, "sip:bot@contoso.com", "secret")
    seen: dict[int, str] = {}

    check(seen, requests.get(sim.discovery_url, timeout=5), 200)
    user_url = bot.discover()
    check(seen, requests.get(user_url, timeout=5), 401)
    token_url = f"{sim.base_url}/WebTicket/oauthtoken"
    check(seen, requests.post(token_url, data={}, timeout=5), 400)
    bot.sign_in()
    check(seen, requests.head(user_url, headers=bot.headers(), timeout=5), 405)
    check(seen, bot.create_app(), 201)
    assert bot.applications_url
    other = {"UserAgent": "x/1", "EndpointId": str(uuid.uuid4()), "Culture": "en-US"}
    check(seen, bot.http.post(bot.applications_url, json=other, headers=bot.headers()), 410)

    available = bot.link("me", "makeMeAvailable")
    check(seen, bot.post(available, {"SupportedModalities": ["Audio"]}), 403)
    check(
        seen,
        bot.post(available, data="x", headers={"Content-Type": "text/plain"}),
        415,
    )
    check(seen, bot.post(available, {"SupportedModalities": ["Messaging"]}), 204)
    check(seen, bot.post(available, {"SupportedModalities": ["Messaging"]}), 409)
    check(seen, bot.post(available, data="x" * 12_000), 413)

    app = bot.refresh()
    etag = bot.get(app["_links"]["self"]["href"]).headers["Etag"]
    check(seen, bot.http.get(bot.app_url, headers={**bot.headers(), "If-None-Match": etag}), 304)
    check(seen, bot.get(app["_links"]["self"]["href"] + "/nothing"), 404)
    xml = {**bot.headers(), "Accept": "application/xml"}
    check(seen, bot.http.get(bot.app_url, headers=xml), 406)

    communication = bot.url(bot.link("communication", "self"))
    check(seen, bot.http.put(communication, json={}, headers=bot.headers()), 428)
    stale = {**bot.headers(), "If-Match": '"1"'}
    check(seen, bot.http.put(communication, json={}, headers=stale), 412)

    boundary = "b0"
    part = "Content-Type: application/http; msgtype=request\r\n\r\nGET /x HTTP/1.1\r\n\r\n"
    many = "".join(f"--{boundary}\r\n{part}\r\n" for _ in range(101)) + f"--{boundary}--\r\n"
    batch = {**bot.headers(), "Content-Type": f"multipart/batching; boundary={boundary}"}
    check(
        seen, bot.http.post(bot.url(app["_links"]["batch"]["href"]), data=many, headers=batch), 429
    )

    for status in (408, 500, 502, 503, 504):
        fault = {"match": {"rel": "application"}, "status": status, "times": 1}
        requests.post(f"{sim.base_url}/_sim/faults", json=fault, timeout=5)
        check(seen, bot.get(app["_links"]["self"]["href"]), status)

    assert seen == {s: p for s, p in EXPECTED.items() if s != 302}


@pytest.fixture()
def tls_sim(tmp_path) -> Iterator[Simulator]:
    sim = Simulator(SimConfig(users=default_users(), **FAST))
    sim.start(tls=True, ca_path=tmp_path / "ca.pem")
    yield sim
    sim.stop()


def test_the_plain_http_redirect_and_its_404(tls_sim: Simulator) -> None:
    assert tls_sim.plain_url
    root = "/Autodiscover/AutodiscoverService.svc/root"
    found = requests.get(tls_sim.plain_url + root, allow_redirects=False, timeout=5)
    assert (found.status_code, found.reason) == (302, EXPECTED[302])
    other = requests.get(tls_sim.plain_url + "/ucwa", timeout=5)
    assert (other.status_code, other.reason) == (404, EXPECTED[404])


def test_every_fault_status_has_a_phrase_in_the_reference_case(sim, bot: Client) -> None:
    bot.start(available=False)
    self_href = bot.app["_links"]["self"]["href"]
    for status in range(400, 600):
        if status == 401:
            continue  # a 401 fault answers the challenge, checked above
        fault = {"match": {"rel": "application"}, "status": status, "times": 1}
        requests.post(f"{sim.base_url}/_sim/faults", json=fault, timeout=5)
        reply = bot.get(self_href)
        assert reply.status_code == status
        if status in EXPECTED:
            assert reply.reason == EXPECTED[status]
        # "Request Entity Too Large", "Error": never werkzeug's "REQUEST ENTITY TOO LARGE"
        assert reply.reason[0].isupper() and not reply.reason.isupper(), (status, reply.reason)


def test_status_lines_inside_a_batch_answer(sim, bot: Client) -> None:
    bot.start(available=False)
    app = bot.app["_links"]["self"]["href"]
    boundary = "b1"
    parts = [f"GET {app}/me HTTP/1.1", f"GET {app}/nothing HTTP/1.1"]
    body = "".join(
        f"--{boundary}\r\nContent-Type: application/http; msgtype=request\r\n\r\n"
        f"{line}\r\nAccept: application/json\r\n\r\n\r\n"
        for line in parts
    )
    headers = {
        **bot.headers(),
        "Content-Type": f"multipart/batching; boundary={boundary}",
        "Accept": "multipart/batching",
    }
    reply = bot.http.post(
        bot.url(app + "/batch"), data=body + f"--{boundary}--\r\n", headers=headers
    )
    assert reply.status_code == 200 and reply.reason == "OK"
    # BatchingRequests.md: each part is "application/http; msgtype=response" with its status line
    assert "HTTP/1.1 200 OK\r\n" in reply.text
    assert "HTTP/1.1 404 Not Found\r\n" in reply.text

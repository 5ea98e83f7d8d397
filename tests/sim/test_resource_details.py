"""Media types (PayloadFormat.md), X-Ms-diagnostics (AuthenticationInUCWA.md), method checks
(HTTP.md) and resource details: application (application_ref.md), contact and search
(contact_ref.md, GetAContactData.md, search_ref.md, SearchForUsersContact.md), contact presence
(GetPresenceDataOfAContact.md, contactPresence_ref.md), photo (GetMyPhoto.md, MeDashboard.md) and
the batch answer's caching headers (BatchingRequests.md)."""

from __future__ import annotations

import json
import re
import time
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from tests.sim.conftest import Client

VND = "application/vnd.microsoft.com.ucwa+json"


# -- content negotiation ------------------------------------------------------------------------


def test_vnd_media_type_is_answered_in_kind(sim, bot: Client) -> None:
    bot.sign_in()
    assert bot.applications_url
    body = {"UserAgent": "SimTests/1.0", "EndpointId": "vnd-1", "Culture": "en-US"}
    headers = {**bot.headers(), "Accept": VND, "Content-Type": VND}
    reply = requests.post(bot.applications_url, data=json.dumps(body), headers=headers, timeout=5)
    assert reply.status_code == 201, reply.text
    assert reply.headers["Content-Type"] == f"{VND}; charset=utf-8"
    app_url = bot.url(reply.json()["_links"]["self"]["href"])
    missing = requests.get(app_url + "/nothing", headers=headers, timeout=5)
    assert missing.status_code == 404 and missing.headers["Content-Type"].startswith(VND)
    plain = requests.get(app_url, headers=bot.headers(), timeout=5)
    assert plain.headers["Content-Type"] == "application/json; charset=utf-8"


def test_xml_is_refused_with_406_and_a_clear_message(sim, bot: Client) -> None:
    bot.start(available=False)
    for accept in ("application/vnd.microsoft.com.ucwa+xml", "application/xml"):
        reply = requests.get(bot.app_url, headers={**bot.headers(), "Accept": accept}, timeout=5)
        assert reply.status_code == 406
        error = reply.json()
        assert error["code"] == "NotAcceptable" and "XML" in error["message"]
    both = requests.get(
        bot.app_url,
        headers={**bot.headers(), "Accept": "application/xml;q=0.5, application/json"},
        timeout=5,
    )
    assert both.status_code == 200


# -- diagnostics headers ------------------------------------------------------------------------


def test_401_carries_x_ms_diagnostics(sim, bot: Client) -> None:
    reply = requests.get(bot.discover(), timeout=5)
    assert reply.status_code == 401
    fqdn = sim.config.server_fqdn
    assert reply.headers["X-Ms-diagnostics"] == (
        f'28020;source="{fqdn}";reason="No valid security token."'
    )
    bot.start(available=False)
    stale = requests.get(bot.app_url, headers={"Authorization": "Bearer cwt=nope"}, timeout=5)
    assert stale.status_code == 401 and stale.headers["X-Ms-diagnostics"].startswith("28020;")


def test_passive_grant_is_sent_to_the_passive_sign_in_page(sim) -> None:
    """AuthenticationInUCWA.md, "Passive grant type": 400, invalid_grant with the address of
    the passive sign-in page, and 28020 in X-Ms-diagnostics."""
    reply = requests.post(
        f"{sim.base_url}/WebTicket/oauthtoken",
        data={"grant_type": "urn:microsoft.rtc:passive"},
        timeout=5,
    )
    assert reply.status_code == 400
    assert reply.json() == {
        "error": "invalid_grant",
        "ms_rtc_passiveauthuri": f"{sim.base_url}/PassiveAuth/PassiveAuth.aspx",
    }
    assert reply.headers["X-Ms-diagnostics"] == (
        f'28020;source="{sim.config.server_fqdn}";reason="No valid security token."'
    )
    assert reply.headers["X-MS-Server-Fqdn"] == sim.config.server_fqdn


def test_a_grant_type_not_allowed_carries_28029(sim) -> None:
    """AuthenticationInUCWA.md, "Error conditions": unsupported_grant_type with 28029."""
    for grant in ("urn:microsoft.rtc:windows", "urn:microsoft.rtc:anonmeeting", "client_secret"):
        reply = requests.post(
            f"{sim.base_url}/WebTicket/oauthtoken", data={"grant_type": grant}, timeout=5
        )
        assert reply.status_code == 400 and reply.json() == {"error": "unsupported_grant_type"}
        assert reply.headers["X-Ms-diagnostics"] == (
            f'28029;source="{sim.config.server_fqdn}";reason="Authentication type not allowed."'
        )
        assert reply.headers["Cache-Control"] == "no-store"


def test_fault_can_carry_a_documented_diagnostics_header(sim, bot: Client) -> None:
    bot.start(available=False)
    value = '28032;source="pool2.contoso.com";reason="The web ticket is invalid."'
    requests.post(
        f"{sim.base_url}/_sim/faults",
        json={"match": {"rel": "application"}, "status": 500, "diagnostics": value, "times": 1},
        timeout=5,
    )
    reply = bot.get(bot.app["_links"]["self"]["href"])
    assert reply.status_code == 500 and reply.headers["X-Ms-diagnostics"] == value
    assert reply.headers["Expires"] == "-1" and reply.headers["Pragma"] == "no-cache"


# -- method checks ------------------------------------------------------------------------------


def test_head_without_token_is_challenged_like_any_other_request(sim, bot: Client) -> None:
    user_url = bot.discover()
    assert requests.head(user_url, timeout=5).status_code == 401
    bot.start(available=False)
    for url in (user_url, bot.app_url, bot.applications_url or ""):
        assert requests.head(url, timeout=5).status_code == 401, url
        assert requests.put(url, timeout=5).status_code == 401, url
    with_token = requests.head(user_url, headers=bot.headers(), timeout=5)
    assert with_token.status_code == 405 and with_token.headers["Allow"] == "GET"


# -- resource details ---------------------------------------------------------------------------


def test_application_id_etag_and_not_modified(sim, bot: Client) -> None:
    """application_ref.md: ``id`` is a telemetry id of the registration, not the id in the href
    (its sample: "samplevalue" beside .../applications/192); the Etag header is a GUID."""
    bot.start(available=False)
    telemetry_id = bot.app["id"]
    assert telemetry_id and telemetry_id not in urlsplit(bot.app_url).path
    assert bot.refresh()["id"] == telemetry_id
    other = Client(sim, "sip:bot@contoso.com", "secret")
    other.sign_in()
    assert other.create_app().json()["id"] != telemetry_id  # one per registration
    reply = bot.get(bot.app["_links"]["self"]["href"])
    etag = reply.headers["Etag"]
    assert len(etag) == 36  # a GUID, as in application_ref.md
    same = bot.http.get(bot.app_url, headers={**bot.headers(), "If-None-Match": etag}, timeout=5)
    assert same.status_code == 304 and same.content == b""
    bot.post(bot.link("me", "makeMeAvailable"), {"SupportedModalities": ["Messaging"]})
    changed = bot.http.get(bot.app_url, headers={**bot.headers(), "If-None-Match": etag}, timeout=5)
    assert changed.status_code == 200 and changed.headers["Etag"] != etag


def test_root_is_not_cacheable(sim) -> None:
    reply = requests.get(sim.discovery_url, timeout=5)
    assert reply.headers["Expires"] == "-1" and reply.headers["Pragma"] == "no-cache"


def test_contact_resource_as_documented(sim, bot: Client) -> None:
    bot.start()
    search = bot.app["_embedded"]["people"]["_links"]["search"]["href"]
    found = bot.get(search + "?query=alice&limit=5")
    assert found.status_code == 200
    result = found.json()
    assert result["rel"] == "search" and result["moreResultsAvailable"] is False
    (alice,) = result["_embedded"]["contact"]
    assert alice["uri"] == "sip:alice@contoso.com" and alice["name"] == "Alice Adams"
    links = alice["_links"]
    assert set(links) == {
        "self",
        "contactPhoto",
        "contactPresence",
        "contactLocation",
        "contactNote",
        "contactSupportedModalities",
        "contactPrivacyRelationship",
    }
    assert alice["etag"].isdigit()
    contact = bot.get(links["self"]["href"])
    assert contact.json() == alice and contact.headers["Etag"] == alice["etag"]
    assert bot.get(links["contactPresence"]["href"]).json()["rel"] == "contactPresence"
    note = bot.get(links["contactNote"]["href"]).json()
    assert note["rel"] == "contactNote" and note["type"] == "Personal"
    location = bot.get(links["contactLocation"]["href"]).json()
    assert location["rel"] == "contactLocation" and "location" in location


def test_contact_presence_as_documented(sim, bot: Client) -> None:
    """GetPresenceDataOfAContact.md step 5: availability, deviceType, lastActive (/Date(ms)/),
    self link, rel contactPresence; values from contactPresence_ref.md's enumerations."""
    bot.start()
    search = bot.app["_embedded"]["people"]["_links"]["search"]["href"]

    def presence(name: str) -> dict[str, Any]:
        (found,) = bot.get(f"{search}?query={name}").json()["_embedded"]["contact"]
        href = found["_links"]["contactPresence"]["href"]
        body = bot.get(href).json()
        assert body["_links"] == {"self": {"href": href}} and body["rel"] == "contactPresence"
        stamp = re.fullmatch(r"/Date\((\d+)\)/", body["lastActive"])
        assert stamp, body["lastActive"]
        body["lastActive"] = int(stamp.group(1))
        return body

    before = int(time.time() * 1000)
    offline = presence("away")
    assert (offline["availability"], offline["deviceType"]) == ("Offline", "Unknown")
    assert offline["lastActive"] <= before and "activity" not in offline
    scripted = presence("alice")
    assert (scripted["availability"], scripted["deviceType"]) == ("Online", "PC")
    assert scripted["lastActive"] >= before

    # A user signed in through a UCWA application: a browser, as available as its signInAs.
    echo = Client(sim, "sip:echo@contoso.com", "pw").start(available=False)
    made_available = int(time.time() * 1000)
    echo.post(
        echo.link("me", "makeMeAvailable"),
        {"SupportedModalities": ["Messaging"], "signInAs": "Offwork"},
    )
    web = presence("echo")
    assert (web["availability"], web["activity"], web["deviceType"]) == (
        "Away",
        "off-work",
        "Web",
    )
    assert web["lastActive"] >= made_available
    assert set(web) == {"availability", "activity", "deviceType", "lastActive", "_links", "rel"}


def test_photo_with_etag_and_expires(sim, bot: Client) -> None:
    """GetMyPhoto.md step 6: image/jpeg, "Expires" equal to "Date", "Cache-Control: private",
    not compressed; MeDashboard.md: its Etag in If-None-Match gives 304 Not Modified."""
    bot.start()
    reply = bot.get(bot.link("me", "photo"))  # requests asks for gzip, deflate
    assert reply.status_code == 200 and reply.headers["Content-Type"] == "image/jpeg"
    assert reply.content[:2] == b"\xff\xd8" and reply.content[-2:] == b"\xff\xd9"
    assert "Content-Encoding" not in reply.headers
    assert reply.headers["Cache-Control"] == "private"
    expires = parsedate_to_datetime(reply.headers["Expires"])
    date = parsedate_to_datetime(reply.headers["Date"])
    assert abs((expires - date).total_seconds()) <= 1
    etag = reply.headers["Etag"]
    same = bot.http.get(
        bot.url(bot.link("me", "photo")), headers={**bot.headers(), "If-None-Match": etag}
    )
    assert same.status_code == 304 and same.content == b"" and "Expires" in same.headers

    search = bot.app["_embedded"]["people"]["_links"]["search"]["href"]
    (alice,) = bot.get(search + "?query=alice").json()["_embedded"]["contact"]
    theirs = bot.get(alice["_links"]["contactPhoto"]["href"])
    assert theirs.status_code == 200 and theirs.headers["Etag"] != etag
    photos = bot.link("me", "photo").rsplit("/", 1)[0]
    assert bot.get(photos + "/nobody@contoso.com").status_code == 404


def test_batch_answer_is_not_cacheable(sim, bot: Client) -> None:
    """BatchingRequests.md: the batch answer carries "Expires: -1" and "Pragma: no-cache"."""
    bot.start(available=False)
    app = bot.app["_links"]["self"]["href"]
    part = f"Content-Type: application/http; msgtype=request\r\n\r\nGET {app}/me HTTP/1.1\r\n\r\n"
    headers = {**bot.headers(), "Content-Type": "multipart/batching; boundary=b"}
    reply = bot.http.post(
        bot.url(bot.app["_links"]["batch"]["href"]),
        data=f"--b\r\n{part}\r\n--b--\r\n",
        headers=headers,
    )
    assert reply.status_code == 200
    assert reply.headers["Expires"] == "-1" and reply.headers["Pragma"] == "no-cache"
    assert reply.headers["Cache-Control"] == "no-cache"


def test_search_limits_and_validation(sim, bot: Client) -> None:
    bot.start(available=False)
    search = bot.app["_embedded"]["people"]["_links"]["search"]["href"]
    everyone = bot.get(search + "?query=contoso.com").json()
    assert len(everyone["_embedded"]["contact"]) == 6
    limited = bot.get(search + "?query=contoso.com&limit=2").json()
    assert len(limited["_embedded"]["contact"]) == 2 and limited["moreResultsAvailable"] is True
    assert bot.get(search).status_code == 400
    assert bot.get(search + "?query=a&limit=101").status_code == 400
    assert bot.get(search + "?query=" + "x" * 257).status_code == 400
    assert bot.get(search + "?query=nobody").json()["_embedded"]["contact"] == []

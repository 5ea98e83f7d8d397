"""Application lifecycle, makeMeAvailable, reportMyActivity and the communication PUT."""

from __future__ import annotations

import requests

from tests.sim.conftest import Client, summary


def test_application_shape_follows_create_an_application(sim, bot: Client) -> None:
    bot.sign_in()
    reply = bot.create_app("ep-1")
    assert reply.status_code == 201
    app = reply.json()
    assert app["rel"] == "application" and app["culture"] == "en-US"
    assert set(app["_links"]) == {"self", "policies", "batch", "events"}
    assert app["_links"]["events"]["href"].endswith("/events?ack=1")
    assert not app["_links"]["self"]["href"].startswith("http")
    embedded = app["_embedded"]
    assert set(embedded) == {"me", "people", "onlineMeetings", "communication"}
    me = embedded["me"]
    assert "makeMeAvailable" in me["_links"]
    assert not {"presence", "note", "location", "reportMyActivity"} & set(me["_links"])
    comm = embedded["communication"]
    markers = [k for k, v in comm.items() if v == "please pass this in a PUT request"]
    assert len(markers) == 1 and len(markers[0]) == 36
    assert comm["supportedModalities"] == [] and comm["supportedMessageFormats"] == ["Plain"]
    assert comm["etag"]
    assert comm["_links"]["conversations"]["href"].endswith("conversations?filter=active")
    assert "startMessaging" in comm["_links"]


def test_same_tuple_returns_200_and_same_app(sim, bot: Client) -> None:
    bot.sign_in()
    first = bot.create_app("stable")
    second = bot.create_app("stable")
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["_links"]["self"] == second.json()["_links"]["self"]


def test_application_input_validation(sim, bot: Client) -> None:
    bot.sign_in()
    url = bot.applications_url
    for body in (
        {"culture": "en-US", "endpointId": "x"},
        {"culture": "en-US", "endpointId": "x" * 101, "userAgent": "a"},
    ):
        reply = requests.post(url, json=body, headers=bot.headers(), timeout=5)
        assert reply.status_code == 400
        assert reply.json()["subcode"] == "ParameterValidationFailure"
    junk = requests.post(
        url, data="{not json", headers=bot.headers({"Content-Type": "application/json"}), timeout=5
    )
    assert junk.status_code == 400 and junk.json()["code"] == "BadRequest"
    form = requests.post(
        url,
        data="a=b",
        headers=bot.headers({"Content-Type": "application/x-www-form-urlencoded"}),
        timeout=5,
    )
    assert form.status_code == 415 and form.json()["code"] == "UnsupportedMediaType"


def test_too_many_applications(make_sim) -> None:
    sim = make_sim(max_applications_per_user=2)
    client = Client(sim, "sip:bot@contoso.com", "secret")
    client.sign_in()
    assert [client.create_app().status_code for _ in range(2)] == [201, 201]
    reply = client.create_app()
    assert reply.status_code == 410
    assert reply.json()["code"] == "Gone" and reply.json()["subcode"] == "TooManyApplications"


def test_delete_application_then_not_found(sim, bot: Client) -> None:
    bot.start()
    me_href = bot.link("me", "self")
    assert bot.delete(bot.app["_links"]["self"]["href"]).status_code == 204
    reply = bot.get(me_href)
    assert reply.status_code == 404 and reply.json()["subcode"] == "ApplicationNotFound"
    assert reply.headers["Content-Type"].startswith("application/json")


def test_make_me_available_events_and_links(sim, bot: Client) -> None:
    bot.sign_in()
    bot.create_app()
    mma = bot.link("me", "makeMeAvailable")
    assert bot.post(mma, {"SupportedModalities": ["Messaging"]}).status_code == 204
    events = bot.drain()
    assert summary(events) == [
        "me:me:updated",
        "me:presence:added",
        "me:note:added",
        "me:location:added",
        "communication:communication:updated",
    ]
    comm = events[-1][1]["_embedded"]["communication"]
    assert comm["supportedModalities"] == ["Messaging"]
    bot.refresh()
    me_links = bot.app["_embedded"]["me"]["_links"]
    assert "makeMeAvailable" not in me_links
    assert {"presence", "note", "location", "reportMyActivity"} <= set(me_links)
    again = bot.post(mma, {"SupportedModalities": ["Messaging"]})
    assert again.status_code == 409 and again.json()["subcode"] == "AlreadyExists"
    assert bot.post(bot.link("me", "reportMyActivity")).status_code == 204


def test_make_me_available_rejects_audio_video(sim, bot: Client) -> None:
    bot.sign_in()
    bot.create_app()
    reply = bot.post(bot.link("me", "makeMeAvailable"), {"supportedModalities": ["Video"]})
    assert reply.status_code == 403 and reply.json()["code"] == "Forbidden"


def test_report_my_activity_requires_make_me_available(sim, bot: Client) -> None:
    bot.start()
    report = bot.link("me", "reportMyActivity")
    assert bot.post(report).status_code == 204
    requests.post(
        f"{sim.base_url}/_sim/expire", json={"user": bot.sip, "what": "application"}, timeout=5
    )
    bot.create_app()  # a fresh application that has not called makeMeAvailable yet
    reply = bot.post(report.replace(report.split("/")[5], bot.app_url.rsplit("/", 1)[1]))
    assert reply.status_code == 409 and reply.json()["subcode"] == "MakeMeAvailableRequired"


def test_put_communication_preconditions(sim, bot: Client) -> None:
    bot.start()
    comm = bot.app["_embedded"]["communication"]
    href = comm["_links"]["self"]["href"]
    body = {k: v for k, v in comm.items() if k not in ("_links", "rel")}
    body["supportedMessageFormats"] = ["Plain", "Html"]

    def put(payload: dict, if_match: str | None) -> requests.Response:
        headers = bot.headers({"If-Match": if_match} if if_match else None)
        return bot.http.put(bot.url(href), json=payload, headers=headers, timeout=5)

    assert put(body, None).status_code == 428
    assert put(body, comm["etag"]).status_code == 428  # unquoted
    assert put(body, '"12345"').status_code == 412
    no_marker = {k: v for k, v in body.items() if v != "please pass this in a PUT request"}
    assert put(no_marker, f'"{comm["etag"]}"').status_code == 400
    assert put(body, f'"{comm["etag"]}"').status_code == 204
    assert bot.get(href).json()["supportedMessageFormats"] == ["Plain", "Html"]

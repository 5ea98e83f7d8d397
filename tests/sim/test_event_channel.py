"""The event channel (EventsInUCWA.md, EventChannelDetails.md, events_ref.md) and app expiry."""

from __future__ import annotations

import threading
import time

import requests

from tests.sim.conftest import Client, is_event


def test_empty_release_after_timeout_and_redelivery(sim, bot: Client) -> None:
    bot.start()
    first_url = bot.next_events
    first = bot.poll().json()
    again = bot.get(first_url).json()
    assert again == first  # same ack again: the same batch
    assert first["_links"]["self"]["href"] == first_url
    started = time.monotonic()
    empty = bot.poll().json()  # nothing happens: released after timeout (1.8 s scaled)
    assert 1.5 < time.monotonic() - started < 5
    assert empty["sender"] == [] and set(empty["_links"]) == {"self", "next"}


def test_parameters_are_validated(sim, bot: Client) -> None:
    bot.start()
    for params in ({"timeout": 10}, {"timeout": 5000}, {"low": 1}, {"medium": "x"}):
        reply = bot.get(bot.next_events, params=params)
        assert reply.status_code == 400 and reply.json()["subcode"] == "ParameterValidationFailure"


def test_medium_events_wait_for_the_window_high_events_do_not(make_sim) -> None:
    sim = make_sim(time_scale=0.05)
    bot = Client(sim, "sip:bot@contoso.com", "secret").start()
    started = time.monotonic()
    bot.poll()  # makeMeAvailable events are Medium: held for medium=5 s scaled to 0.25 s
    assert time.monotonic() - started >= 0.2
    requests.post(
        f"{sim.base_url}/_sim/users/alice@contoso.com/messages",
        json={"to": bot.sip, "text": "hi"},
        timeout=5,
    )
    started = time.monotonic()
    bot.wait_for(is_event("messagingInvitation", "started"))
    assert time.monotonic() - started < 0.2


def test_second_pget_replaces_the_first(sim, bot: Client) -> None:
    bot.start()
    bot.poll()
    url = bot.next_events
    results: list[requests.Response] = []
    parked = threading.Thread(target=lambda: results.append(bot.get(url)))
    parked.start()
    time.sleep(0.3)
    second = threading.Thread(target=lambda: results.append(bot.get(url)))
    second.start()
    parked.join(5)
    assert results and results[0].status_code == 409
    assert results[0].json() == {
        "code": "Conflict",
        "subcode": "PGetReplaced",
        "message": results[0].json()["message"],
    }
    second.join(5)
    assert results[1].status_code == 200


def test_lower_priority_pget_does_not_replace(sim, bot: Client) -> None:
    bot.start()
    bot.poll()
    url = bot.next_events
    results: list[requests.Response] = []
    parked = threading.Thread(target=lambda: results.append(bot.get(url, params={"priority": 5})))
    parked.start()
    time.sleep(0.3)
    low = bot.get(url, params={"priority": 1})
    assert low.status_code == 409 and low.json()["subcode"] == "PGetReplaced"
    parked.join(5)
    assert results[0].status_code == 200


def test_resync_for_an_ack_outside_the_window(sim, bot: Client) -> None:
    bot.start()
    old = bot.next_events
    bot.poll()
    latest = bot.poll().json()  # acknowledges batch 1; batch 2 is not acknowledged yet
    reply = bot.get(old).json()
    assert list(reply["_links"]) == ["resync"] and "sender" not in reply
    resync = reply["_links"]["resync"]["href"]
    assert resync == latest["_links"]["self"]["href"]
    assert bot.get(resync).json() == latest


def test_resume_after_long_absence_tears_down_conversations(make_sim) -> None:
    sim = make_sim(resume_after=50)  # 0.5 s
    bot = Client(sim, "sip:bot@contoso.com", "secret").start()
    bot.post(bot.link("communication", "startMessaging"), {"to": "sip:alice@contoso.com"})
    bot.wait_for(is_event("messagingInvitation", "completed"))
    time.sleep(0.6)
    body = bot.poll().json()
    assert "resume" in body["_links"] and "next" not in body["_links"]
    convs = bot.get(bot.link("communication", "conversations")).json()
    assert "conversation" not in convs["_links"]
    assert "next" in bot.poll().json()["_links"]


def test_resume_forced_through_control_api(sim, bot: Client) -> None:
    bot.start()
    bot.poll()
    requests.post(
        f"{sim.base_url}/_sim/expire", json={"user": bot.sip, "what": "event_channel"}, timeout=5
    )
    assert "resume" in bot.poll().json()["_links"]


def test_application_expires_without_pget(make_sim) -> None:
    for status, subcode in ((404, "ApplicationNotFound"), (410, "InactiveApplicationExpired")):
        sim = make_sim(app_expiry=30, resume_after=20, app_expiry_status=status)
        bot = Client(sim, "sip:bot@contoso.com", "secret").start()
        time.sleep(0.4)
        reply = bot.poll()
        assert reply.status_code == status and reply.json()["subcode"] == subcode


def test_application_expires_without_report_my_activity(make_sim) -> None:
    sim = make_sim(activity_expiry=30, pget_timeout=180)
    bot = Client(sim, "sip:bot@contoso.com", "secret").start()
    bot.poll()
    time.sleep(0.4)
    reply = bot.get(bot.app["_links"]["self"]["href"])
    assert reply.status_code == 410 and reply.json()["subcode"] == "InactiveApplicationExpired"


def test_deleting_the_application_releases_the_parked_pget(sim, bot: Client) -> None:
    bot.start()
    bot.poll()
    results: list[requests.Response] = []
    parked = threading.Thread(target=lambda: results.append(bot.poll()))
    parked.start()
    time.sleep(0.2)
    bot.delete(bot.app["_links"]["self"]["href"])
    parked.join(5)
    assert results[0].status_code == 404

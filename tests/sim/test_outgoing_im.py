"""Outgoing IM (SendAnIM.md): events in order, messages, behaviours and errors."""

from __future__ import annotations

import base64

import requests

from tests.sim.conftest import Client, is_event, summary


def start(client: Client, to: str, **extra) -> requests.Response:
    body = {
        "importance": "Normal",
        "subject": "Task Sample",
        "to": to,
        "operationId": "5028e824-2268-4b14-9e59-1abad65ff393",
        **extra,
    }
    return client.post(client.link("communication", "startMessaging"), body)


def test_send_an_im_trace(sim, bot: Client) -> None:
    bot.start()
    bot.drain()
    reply = start(bot, "sip:alice@contoso.com")
    assert reply.status_code == 201 and reply.text == ""
    location = reply.headers["Location"]
    assert "/messagingInvitations/" in location and not location.startswith("http")
    bot.wait_for(is_event("messagingInvitation", "completed"))
    names = summary(bot.seen)
    assert names[names.index("communication:messagingInvitation:started") :] == [
        "communication:messagingInvitation:started",
        "communication:conversation:added",
        "conversation:localParticipant:added",
        "conversation:messaging:updated",
        "communication:conversation:updated",
        "conversation:participant:added",
        "conversation:participantMessaging:added",
        "conversation:participantMessaging:added",
        "conversation:messaging:updated",
        "communication:messagingInvitation:completed",
    ]
    events = {f"{s}:{e['link']['rel']}:{e['type']}:{i}": e for i, (s, e) in enumerate(bot.seen)}
    started = next(e for k, e in events.items() if "messagingInvitation:started" in k)
    inv = started["_embedded"]["messagingInvitation"]
    assert (inv["direction"], inv["state"]) == ("Outgoing", "Connecting")
    assert inv["operationId"] == "5028e824-2268-4b14-9e59-1abad65ff393"
    assert {"self", "from", "to", "cancel", "conversation", "messaging"} <= set(inv["_links"])
    assert inv["_links"]["self"]["href"] == location
    added = next(e for k, e in events.items() if "conversation:added" in k)
    assert added["_embedded"]["conversation"]["state"] == "Connecting"
    assert added["_embedded"]["conversation"]["activeModalities"] == []
    participant = next(
        e
        for k, e in events.items()
        if "participant:added" in k and e["link"]["rel"] == "participant"
    )
    assert "_embedded" not in participant
    pm = [e for k, e in events.items() if "participantMessaging" in k]
    assert pm[0]["in"]["rel"] == "participant" and "_embedded" not in pm[0]
    assert pm[1]["in"]["rel"] == "localParticipant" and "_embedded" in pm[1]
    done = bot.seen[-1][1]
    assert done["status"] == "Success"
    final = done["_embedded"]["messagingInvitation"]
    assert final["state"] == "Connected" and "cancel" not in final["_links"]
    accepted = final["_embedded"]["acceptedByParticipant"]
    assert accepted[0]["uri"] == "sip:alice@contoso.com"
    messaging = [e for _, e in bot.seen if e["link"]["rel"] == "messaging"][-1]
    m = messaging["_embedded"]["messaging"]
    assert m["state"] == "Connected" and m["negotiatedMessageFormats"] == ["Plain"]
    assert {"sendMessage", "setIsTyping", "typingParticipants", "stopMessaging"} <= set(m["_links"])

    send = bot.post(
        m["_links"]["sendMessage"]["href"] + "?OperationContext=abc",
        data=b"What's up?",
        headers={"Content-Type": "text/plain"},
    )
    assert send.status_code == 201 and "/messaging/messages/" in send.headers["Location"]
    _, ev = bot.wait_for(is_event("message", "completed"))
    assert ev["status"] == "Success" and ev["link"]["href"] == send.headers["Location"]
    assert ev["_embedded"]["message"]["direction"] == "Outgoing"
    assert ev["_embedded"]["message"]["timeStamp"].startswith("/Date(")
    assert ev["_embedded"]["message"]["operationId"] == "abc"  # echoed in the event as well
    inbox = requests.get(
        f"{sim.base_url}/_sim/users/sip:alice@contoso.com/messages", timeout=5
    ).json()
    assert [m["text"] for m in inbox] == ["What's up?"]
    assert inbox[0]["from"] == "sip:bot@contoso.com"

    conv_href = final["_links"]["conversation"]["href"]
    convs = bot.get(bot.link("communication", "conversations")).json()
    assert [c["href"] for c in convs["_links"]["conversation"]] == [conv_href]
    assert bot.get(conv_href).json()["state"] == "Connected"
    assert bot.post(m["_links"]["stopMessaging"]["href"]).status_code == 204
    bot.wait_for(is_event("conversation", "deleted"))
    tail = summary(bot.seen)[-4:]
    assert tail == [
        "conversation:messaging:updated",
        "conversation:participant:deleted",
        "communication:conversation:updated",
        "communication:conversation:deleted",
    ]
    assert bot.get(conv_href).status_code == 404


def test_first_message_in_invitation_reaches_the_user(sim, bot: Client) -> None:
    bot.start()
    encoded = base64.b64encode("Hello Wörld".encode()).decode()
    start(
        bot,
        "sip:alice@contoso.com",
        _links={"message": {"href": f"data:text/plain;base64,{encoded}"}},
    )
    bot.wait_for(is_event("messagingInvitation", "completed", status="Success"))
    assert not [e for _, e in bot.seen if e["link"]["rel"] == "message"]
    inbox = requests.get(f"{sim.base_url}/_sim/users/alice@contoso.com/messages", timeout=5).json()
    assert inbox[0]["text"] == "Hello Wörld"


def test_html_first_message_url_encoded(sim, bot: Client) -> None:
    bot.start()
    start(
        bot,
        "sip:alice@contoso.com",
        _links={"message": {"href": "data:text/html;charset=utf-8,%3Cb%3EHi%3C%2Fb%3E+there"}},
    )
    bot.wait_for(is_event("messagingInvitation", "completed", status="Success"))
    inbox = requests.get(f"{sim.base_url}/_sim/users/alice@contoso.com/messages", timeout=5).json()
    assert inbox[0]["text"] == "Hi there" and inbox[0]["html"] == "<b>Hi</b> there"


def _failure(bot: Client, to: str) -> dict:
    start(bot, to)
    _, ev = bot.wait_for(is_event("messagingInvitation", "completed"))
    assert ev["status"] == "Failure"
    bot.wait_for(is_event("conversation", "deleted"))
    return ev


def test_declined(sim, bot: Client) -> None:
    bot.start()
    ev = _failure(bot, "sip:decliner@contoso.com")
    assert ev["reason"] == {
        "code": "RemoteFailure",
        "subcode": "Declined",
        "message": "Your invitation was declined.",
    }
    assert ev["_embedded"]["messagingInvitation"]["state"] == "Failed"


def test_no_answer_offline_and_unknown(sim, bot: Client) -> None:
    bot.start()
    assert _failure(bot, "sip:silent@contoso.com")["reason"]["subcode"] == "Timeout"
    assert _failure(bot, "sip:away@contoso.com")["reason"]["subcode"] == "TemporarilyUnavailable"
    assert _failure(bot, "sip:nobody@contoso.com")["reason"]["subcode"] == "DestinationNotFound"


def test_cancel_while_connecting(sim, bot: Client) -> None:
    bot.start()
    start(bot, "sip:silent@contoso.com")
    _, ev = bot.wait_for(is_event("messagingInvitation", "started"))
    cancel = ev["_embedded"]["messagingInvitation"]["_links"]["cancel"]["href"]
    assert bot.post(cancel).status_code == 204
    _, done = bot.wait_for(is_event("messagingInvitation", "completed"))
    assert done["status"] == "Failure" and done["reason"]["subcode"] == "Canceled"
    assert done["_embedded"]["messagingInvitation"]["state"] == "Cancelled"
    assert bot.post(cancel).status_code == 409


def test_echo_user_replies_in_the_conversation(sim, bot: Client) -> None:
    bot.start()
    start(bot, "sip:echo@contoso.com", _links={"message": {"href": "data:text/plain,ping"}})
    _, ev = bot.wait_for(is_event("message", "completed", direction="Incoming"))
    assert ev["_embedded"]["message"]["_links"]["plainMessage"]["href"] == (
        "data:text/plain;charset=utf-8,ping%0d%0a"
    )


def test_start_messaging_validation(sim, bot: Client) -> None:
    bot.start()
    href = bot.link("communication", "startMessaging")
    cases = [
        {"subject": "no to"},
        {"to": "alice@contoso.com"},
        {"to": "sip:alice@contoso.com", "operationId": "x" * 51},
        {"to": "sip:alice@contoso.com", "subject": "s" * 251},
        {"to": "sip:alice@contoso.com", "importance": "Whatever"},
        {"to": "sip:alice@contoso.com", "_links": {"message": {"href": "not-a-data-uri"}}},
        {"to": 42},
    ]
    for body in cases:
        reply = bot.post(href, body)
        assert reply.status_code == 400, body
        assert reply.json()["subcode"] == "ParameterValidationFailure", body
    big = "data:text/plain," + "a" * 8001
    too_big = bot.post(href, {"to": "sip:alice@contoso.com", "_links": {"message": {"href": big}}})
    assert too_big.status_code == 413 and too_big.json()["code"] == "EntityTooLarge"


def test_send_message_errors(sim, bot: Client) -> None:
    bot.start()
    start(bot, "sip:silent@contoso.com")
    _, ev = bot.wait_for(is_event("messagingInvitation", "started"))
    messaging = ev["_embedded"]["messagingInvitation"]["_links"]["messaging"]["href"]
    send_href = messaging + "/messages"  # not offered yet: messaging is Connecting
    early = bot.post(send_href, data=b"hi", headers={"Content-Type": "text/plain"})
    assert early.status_code == 409 and early.json()["code"] == "Conflict"

    start(bot, "sip:alice@contoso.com")
    _, ok = bot.wait_for(is_event("messaging", "updated", state="Connected"))
    send = ok["_embedded"]["messaging"]["_links"]["sendMessage"]["href"]
    html = bot.post(send, data=b"<b>x</b>", headers={"Content-Type": "text/html"})
    assert html.status_code == 415  # Html was not negotiated
    json_body = bot.post(send, {"text": "x"})
    assert json_body.status_code == 415
    big = bot.post(send, data=b"a" * 8001, headers={"Content-Type": "text/plain"})
    assert big.status_code == 413 and big.json()["code"] == "EntityTooLarge"


def test_html_after_enabling_it(sim, bot: Client) -> None:
    bot.start(formats=["Plain", "Html"])
    start(bot, "sip:alice@contoso.com")
    _, ok = bot.wait_for(is_event("messaging", "updated", state="Connected"))
    assert ok["_embedded"]["messaging"]["negotiatedMessageFormats"] == ["Plain", "Html"]
    send = ok["_embedded"]["messaging"]["_links"]["sendMessage"]["href"]
    reply = bot.post(
        send,
        data=b"<p>Hi &amp; bye</p>",
        headers={"Content-Type": "text/html; charset=utf-8"},
    )
    assert reply.status_code == 201
    inbox = requests.get(f"{sim.base_url}/_sim/users/alice@contoso.com/messages", timeout=5).json()
    assert inbox[-1]["text"] == "Hi & bye" and inbox[-1]["html"] == "<p>Hi &amp; bye</p>"

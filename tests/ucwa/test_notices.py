from datetime import UTC, datetime
from typing import Any

from bridge.ucwa.datauri import decode_data_uri
from bridge.ucwa.events import Reason, parse_events
from bridge.ucwa.notices import (
    ConversationChanged,
    IncomingInvitation,
    IncomingMessage,
    InvitationCache,
    InvitationOutcome,
    MessageOutcome,
    MessagingChanged,
    NeedsFetch,
    ParticipantChanged,
    TypingChanged,
    first_message_key,
    interpret,
)

APP = "/ucwa/oauth/v1/applications/102"
COMM = f"{APP}/communication"
CONV = f"{COMM}/conversations/21a1"
OUT_INV = f"{COMM}/messagingInvitations/60c"
IN_CONV = f"{COMM}/conversations/eee0"
IN_INV = f"{COMM}/messagingInvitations/6408"
OP_ID = "5028e824-2268-4b14-9e59-1abad65ff393"


def batch(*senders: tuple[str, str, list[dict]]) -> dict:
    return {
        "_links": {"next": {"href": f"{APP}/events?ack=9"}},
        "sender": [{"rel": r, "href": h, "events": evs} for r, h, evs in senders],
    }


def ev(rel: str, href: str, type_: str, embedded: dict | None = None, **extra: object) -> dict:
    event: dict = {"link": {"rel": rel, "href": href}, "type": type_, **extra}
    if embedded is not None:
        event["_embedded"] = {rel: embedded}
    return event


def out_invitation(state: str, **links: str) -> dict:
    return {
        "direction": "Outgoing",
        "state": state,
        "operationId": OP_ID,
        "threadId": "0c7e9e90916041099ffd46075944f433",
        "_links": {
            "self": {"href": OUT_INV},
            "to": {"href": f"{APP}/people/lenea@contoso.com"},
            "conversation": {"href": CONV},
            "messaging": {"href": f"{CONV}/messaging"},
            **{k: {"href": v} for k, v in links.items()},
        },
    }


MESSAGING_CONNECTED = {
    "state": "Connected",
    "negotiatedMessageFormats": ["Plain"],
    "_links": {
        "self": {"href": f"{CONV}/messaging"},
        "conversation": {"href": CONV},
        "sendMessage": {"href": f"{CONV}/messaging/messages"},
        "setIsTyping": {"href": f"{CONV}/messaging/typing"},
        "typingParticipants": {"href": f"{CONV}/messaging/typingParticipants"},
        "stopMessaging": {"href": f"{CONV}/messaging/terminate"},
    },
}


def test_send_step4_started_conversation_added_messaging_connecting() -> None:
    data = batch(
        (
            "communication",
            COMM,
            [
                ev(
                    "messagingInvitation",
                    OUT_INV,
                    "started",
                    out_invitation("Connecting", cancel=f"{CONV}/messaging/terminate"),
                ),
                ev(
                    "conversation",
                    CONV,
                    "added",
                    {
                        "state": "Connecting",
                        "threadId": "t1",
                        "_links": {"messaging": {"href": f"{CONV}/messaging"}},
                    },
                ),
            ],
        ),
        (
            "conversation",
            CONV,
            [
                ev(
                    "localParticipant",
                    f"{CONV}/participants/toshm@contoso.com",
                    "added",
                    {"uri": "sip:t@c"},
                ),
                ev(
                    "messaging",
                    f"{CONV}/messaging",
                    "updated",
                    {
                        "state": "Connecting",
                        "_links": {"stopMessaging": {"href": f"{CONV}/messaging/terminate"}},
                    },
                ),
            ],
        ),
    )
    notices = interpret(parse_events(data))
    assert notices == [
        ConversationChanged(
            "added", CONV, "Connecting", "t1", None, "sip:lenea@contoso.com", f"{CONV}/messaging"
        ),
        MessagingChanged(
            f"{CONV}/messaging",
            CONV,
            "Connecting",
            None,
            f"{CONV}/messaging/terminate",
            None,
            None,
            (),
            None,
        ),
    ]


def test_send_step6_accepted() -> None:
    accepted = out_invitation("Connected")
    accepted["_embedded"] = {
        "acceptedByParticipant": [{"uri": "sip:lenea@contoso.com", "name": ""}]
    }
    data = batch(
        ("communication", COMM, [ev("conversation", CONV, "updated", {"state": "Connected"})]),
        (
            "conversation",
            CONV,
            [
                ev("participant", f"{CONV}/participants/lenea@contoso.com", "added"),
                {
                    "link": {
                        "rel": "participantMessaging",
                        "href": f"{CONV}/participants/lenea@contoso.com/messaging",
                    },
                    "in": {"rel": "participant", "href": f"{CONV}/participants/lenea@contoso.com"},
                    "type": "added",
                },
                ev("messaging", f"{CONV}/messaging", "updated", MESSAGING_CONNECTED),
            ],
        ),
        (
            "communication",
            COMM,
            [ev("messagingInvitation", OUT_INV, "completed", accepted, status="Success")],
        ),
    )
    notices = interpret(parse_events(data))
    assert [type(n) for n in notices] == [
        ConversationChanged,
        ParticipantChanged,
        MessagingChanged,
        InvitationOutcome,
    ]
    conv, joined, messaging, outcome = notices
    assert isinstance(conv, ConversationChanged) and conv.remote_uri == "sip:lenea@contoso.com"
    assert joined == ParticipantChanged(
        CONV, f"{CONV}/participants/lenea@contoso.com", "sip:lenea@contoso.com", True
    )
    assert isinstance(messaging, MessagingChanged)
    assert messaging.state == "Connected"
    assert messaging.send_message_href == f"{CONV}/messaging/messages"
    assert messaging.set_is_typing_href == f"{CONV}/messaging/typing"
    assert messaging.negotiated_formats == ("Plain",)
    assert outcome == InvitationOutcome(
        OUT_INV,
        "Outgoing",
        True,
        "Connected",
        None,
        OP_ID,
        CONV,
        f"{CONV}/messaging",
        "0c7e9e90916041099ffd46075944f433",
        "sip:lenea@contoso.com",
    )


def test_invitation_declined_failure() -> None:
    failed = out_invitation("Failed")
    reason = {
        "code": "RemoteFailure",
        "subcode": "Declined",
        "message": "Your invitation was declined.",
    }
    data = batch(
        (
            "communication",
            COMM,
            [
                ev(
                    "messagingInvitation",
                    OUT_INV,
                    "completed",
                    failed,
                    status="Failure",
                    reason=reason,
                )
            ],
        )
    )
    [outcome] = interpret(parse_events(data))
    assert isinstance(outcome, InvitationOutcome)
    assert not outcome.success and outcome.state == "Failed" and outcome.operation_id == OP_ID
    assert outcome.reason == Reason("RemoteFailure", "Declined", "Your invitation was declined.")


def test_send_step12_message_completed_outgoing() -> None:
    msg = f"{CONV}/messaging/messages/2"
    ok = {
        "direction": "Outgoing",
        "timeStamp": "/Date(1364327898968)/",
        "_links": {"self": {"href": msg}, "messaging": {"href": f"{CONV}/messaging"}},
    }
    data = batch(("conversation", CONV, [ev("message", msg, "completed", ok, status="Success")]))
    assert interpret(parse_events(data)) == [MessageOutcome(msg, True, None, None, CONV)]
    fail = batch(
        (
            "conversation",
            CONV,
            [
                ev(
                    "message",
                    msg,
                    "completed",
                    ok,
                    status="Failure",
                    reason={"code": "ServiceFailure"},
                )
            ],
        )
    )
    [outcome] = interpret(parse_events(fail))
    assert isinstance(outcome, MessageOutcome) and not outcome.success
    assert outcome.reason == Reason("ServiceFailure")


INCOMING_STARTED: dict[str, Any] = {
    "direction": "Incoming",
    "importance": "Normal",
    "threadId": "Ac7bUftwUcVMzgTzRl+OQchCsUn35Q==",
    "state": "Connecting",
    "subject": "",
    "_links": {
        "self": {"href": IN_INV},
        "to": {"href": f"{APP}/people/toshm@contoso.com"},
        "conversation": {"href": IN_CONV},
        "accept": {"href": f"{IN_INV}/accept"},
        "decline": {"href": f"{IN_INV}/decline"},
        "messaging": {"href": f"{IN_CONV}/messaging"},
        "message": {"href": "data:text/plain;charset=utf-8,Hi+Tosh%0d%0a"},
    },
    "_embedded": {
        "from": {
            "name": "Lene Aaling",
            "uri": "sip:lenea@contoso.com",
            "_links": {"self": {"href": f"{IN_CONV}/participants/lenea@contoso.com"}},
        }
    },
}


def test_receive_step8_invitation_started_and_step10_updated_drops_accept() -> None:
    step8 = batch(
        (
            "communication",
            COMM,
            [
                ev("messagingInvitation", IN_INV, "started", INCOMING_STARTED),
                ev(
                    "conversation",
                    IN_CONV,
                    "added",
                    {"state": "Incoming", "activeModalities": ["Messaging"]},
                ),
            ],
        ),
        (
            "conversation",
            IN_CONV,
            [
                ev("localParticipant", f"{IN_CONV}/participants/toshm@contoso.com", "added", {}),
            ],
        ),
    )
    invitation, conversation = interpret(parse_events(step8))
    assert invitation == IncomingInvitation(
        IN_INV,
        "started",
        f"{IN_INV}/accept",
        f"{IN_INV}/decline",
        "sip:lenea@contoso.com",
        "Lene Aaling",
        "data:text/plain;charset=utf-8,Hi+Tosh%0d%0a",
        IN_CONV,
        f"{IN_CONV}/messaging",
        "Ac7bUftwUcVMzgTzRl+OQchCsUn35Q==",
        "",
    )
    assert isinstance(conversation, ConversationChanged)
    assert conversation.state == "Incoming" and conversation.remote_uri == "sip:lenea@contoso.com"

    updated_resource = {
        **INCOMING_STARTED,
        "_links": {
            k: v for k, v in INCOMING_STARTED["_links"].items() if k not in ("accept", "decline")
        },
    }
    step10 = batch(
        ("communication", COMM, [ev("messagingInvitation", IN_INV, "updated", updated_resource)])
    )
    [updated] = interpret(parse_events(step10))
    assert isinstance(updated, IncomingInvitation) and updated.accept_href is None

    cache = InvitationCache()
    assert isinstance(invitation, IncomingInvitation)
    cache.merge(invitation)
    merged = cache.merge(updated)
    assert merged.accept_href == f"{IN_INV}/accept"
    assert merged.decline_href == f"{IN_INV}/decline"
    cache.forget(IN_INV)
    assert cache.merge(updated).accept_href is None


def test_invitation_cache_is_bounded() -> None:
    cache = InvitationCache(max_entries=2)
    base = IncomingInvitation("a", "started", "acc", None, None, None, None, None, None, None, None)
    for href in ("a", "b", "c"):
        cache.merge(
            IncomingInvitation(
                href, "started", f"{href}/accept", None, None, None, None, None, None, None, None
            )
        )
    assert len(cache) == 2
    assert (
        cache.merge(
            IncomingInvitation("a", "updated", None, None, None, None, None, None, None, None, None)
        ).accept_href
        is None
    )
    assert base.accept_href == "acc"


def test_receive_step9_participant_added_link_only() -> None:
    data = batch(
        (
            "conversation",
            IN_CONV,
            [ev("participant", f"{IN_CONV}/participants/lenea@contoso.com", "added")],
        )
    )
    assert interpret(parse_events(data)) == [
        ParticipantChanged(
            IN_CONV, f"{IN_CONV}/participants/lenea@contoso.com", "sip:lenea@contoso.com", True
        )
    ]


def test_receive_step15_connected_and_step16_message() -> None:
    step15 = batch(
        (
            "conversation",
            IN_CONV,
            [ev("messaging", f"{IN_CONV}/messaging", "updated", MESSAGING_CONNECTED)],
        ),
        (
            "communication",
            COMM,
            [
                ev("conversation", IN_CONV, "updated", {"state": "Connected"}),
                ev(
                    "messagingInvitation",
                    IN_INV,
                    "completed",
                    {**INCOMING_STARTED, "state": "Connected"},
                    status="Success",
                ),
            ],
        ),
    )
    notices = interpret(parse_events(step15))
    assert [type(n) for n in notices] == [MessagingChanged, ConversationChanged, InvitationOutcome]
    outcome = notices[2]
    assert isinstance(outcome, InvitationOutcome)
    assert outcome.direction == "Incoming" and outcome.success and outcome.operation_id is None

    msg = f"{IN_CONV}/messaging/messages/2"
    message: dict[str, Any] = {
        "direction": "Incoming",
        "timeStamp": "/Date(1383784870271)/",
        "_links": {
            "self": {"href": msg},
            "contact": {"href": f"{APP}/people/lenea@contoso.com"},
            "participant": {
                "href": f"{IN_CONV}/participants/lenea@contoso.com",
                "title": "Lene Aaling",
            },
            "messaging": {"href": f"{IN_CONV}/messaging"},
            "plainMessage": {"href": "data:text/plain;charset=utf-8,Hi+Tosh%0d%0a"},
        },
    }
    step16 = batch(
        ("conversation", IN_CONV, [ev("message", msg, "completed", message, status="Success")])
    )
    [incoming] = interpret(parse_events(step16))
    assert incoming == IncomingMessage(
        msg,
        IN_CONV,
        f"{IN_CONV}/participants/lenea@contoso.com",
        "sip:lenea@contoso.com",
        "Lene Aaling",
        "data:text/plain;charset=utf-8,Hi+Tosh%0d%0a",
        None,
        datetime(2013, 11, 7, 0, 41, 10, 271000, tzinfo=UTC),
    )
    assert isinstance(incoming, IncomingMessage)
    assert incoming.dedupe_key == f"message:{msg}"
    # The first message repeats the invitation's text: both map to the same key.
    invitation_text = decode_data_uri(INCOMING_STARTED["_links"]["message"]["href"]).text
    message_text = decode_data_uri(incoming.plain_data_uri or "").text
    assert first_message_key(IN_CONV, invitation_text) == first_message_key(IN_CONV, message_text)
    assert first_message_key(IN_CONV, "other") != first_message_key(IN_CONV, message_text)

    started = batch(
        (
            "conversation",
            IN_CONV,
            [
                ev(
                    "message",
                    msg,
                    "started",
                    {
                        **message,
                        "_links": {
                            **message["_links"],
                            "htmlMessage": {"href": "data:text/html,%3cb%3ex"},
                        },
                    },
                )
            ],
        )
    )
    [again] = interpret(parse_events(started))
    assert isinstance(again, IncomingMessage)
    assert again.dedupe_key == incoming.dedupe_key
    assert again.html_data_uri == "data:text/html,%3cb%3ex"


def test_typing_is_not_a_join() -> None:
    participant = f"{CONV}/participants/lenea@contoso.com"
    typing_in = {"rel": "typingParticipants", "href": f"{CONV}/messaging/typingParticipants"}
    data = batch(
        (
            "conversation",
            CONV,
            [
                {
                    "link": {"rel": "participant", "href": participant},
                    "in": typing_in,
                    "type": "added",
                },
                {
                    "link": {"rel": "participant", "href": participant},
                    "in": typing_in,
                    "type": "deleted",
                },
                {
                    "link": {"rel": "participant", "href": participant},
                    "in": {"rel": "lobby"},
                    "type": "added",
                },
                ev("participant", participant, "updated"),
                ev("participant", participant, "deleted"),
            ],
        )
    )
    assert interpret(parse_events(data)) == [
        TypingChanged(CONV, participant, "sip:lenea@contoso.com", True),
        TypingChanged(CONV, participant, "sip:lenea@contoso.com", False),
        ParticipantChanged(CONV, participant, "sip:lenea@contoso.com", False),
    ]


def test_conversation_deleted_uses_known_remote_and_messaging_disconnected() -> None:
    data = batch(
        (
            "conversation",
            CONV,
            [
                ev(
                    "messaging",
                    f"{CONV}/messaging",
                    "updated",
                    {
                        "state": "Disconnected",
                        "_links": {
                            "addMessaging": {"href": f"{CONV}/messaging/messagingInvitations"}
                        },
                    },
                )
            ],
        ),
        ("communication", COMM, [ev("conversation", CONV, "deleted")]),
    )
    messaging, deleted = interpret(parse_events(data), {CONV: "sip:lenea@contoso.com"})
    assert isinstance(messaging, MessagingChanged)
    assert messaging.state == "Disconnected"
    assert messaging.add_messaging_href == f"{CONV}/messaging/messagingInvitations"
    assert messaging.send_message_href is None
    assert deleted == ConversationChanged(
        "deleted", CONV, None, None, None, "sip:lenea@contoso.com", None
    )


def test_link_only_events_need_a_fetch_and_others_are_ignored() -> None:
    data = batch(
        (
            "conversation",
            CONV,
            [
                ev("message", f"{CONV}/messaging/messages/3", "completed", status="Success"),
                ev("message", f"{CONV}/messaging/messages/3", "started"),
                ev("participantMessaging", f"{CONV}/participants/x@y/messaging", "added"),
            ],
        ),
        ("me", f"{APP}/me", [ev("presence", f"{APP}/me/presence", "added")]),
        ("communication", COMM, [ev("messagingInvitation", OUT_INV, "started")]),
    )
    assert interpret(parse_events(data)) == [
        NeedsFetch("message", f"{CONV}/messaging/messages/3", "completed"),
        NeedsFetch("messagingInvitation", OUT_INV, "started"),
    ]

import pytest

from bridge.ucwa.errors import ProtocolViolation
from bridge.ucwa.events import CursorKind, Reason, parse_events

APP = "/ucwa/oauth/v1/applications/102"
CONV = f"{APP}/communication/conversations/21a1"
INV = f"{APP}/communication/messagingInvitations/60c"


def sender(rel: str, href: str, *events: dict) -> dict:
    return {"rel": rel, "href": href, "events": list(events)}


# SendAnIM.md step 6, trimmed: communication appears twice, order must be kept.
STEP6 = {
    "_links": {"self": {"href": f"{APP}/events?ack=3"}, "next": {"href": f"{APP}/events?ack=4"}},
    "sender": [
        sender(
            "communication",
            f"{APP}/communication",
            {
                "link": {"rel": "conversation", "href": CONV},
                "_embedded": {"conversation": {"state": "Connected", "rel": "conversation"}},
                "type": "updated",
            },
        ),
        sender(
            "conversation",
            CONV,
            {
                "link": {"rel": "participant", "href": f"{CONV}/participants/lenea@contoso.com"},
                "type": "added",
            },
            {
                "link": {
                    "rel": "participantMessaging",
                    "href": f"{CONV}/participants/lenea@contoso.com/messaging",
                },
                "in": {
                    "rel": "participant",
                    "href": f"{CONV}/participants/lenea@contoso.com",
                    "title": "",
                },
                "type": "added",
            },
        ),
        sender(
            "communication",
            f"{APP}/communication",
            {
                "link": {"rel": "messagingInvitation", "href": INV},
                "status": "Success",
                "_embedded": {
                    "messagingInvitation": {"state": "Connected", "direction": "Outgoing"}
                },
                "type": "completed",
            },
        ),
    ],
}


def test_parse_keeps_order_across_repeated_senders() -> None:
    batch = parse_events(STEP6)
    assert [s.rel for s in batch.senders] == ["communication", "conversation", "communication"]
    flat = list(batch.events())
    assert [(s.rel, ev.rel, ev.type) for s, ev in flat] == [
        ("communication", "conversation", "updated"),
        ("conversation", "participant", "added"),
        ("conversation", "participantMessaging", "added"),
        ("communication", "messagingInvitation", "completed"),
    ]
    pm = flat[2][1]
    assert pm.in_rel == "participant" and pm.in_href == f"{CONV}/participants/lenea@contoso.com"
    assert pm.embedded is None
    done = flat[3][1]
    assert done.succeeded and not done.failed
    assert done.embedded == {"state": "Connected", "direction": "Outgoing"}
    assert batch.self_href == f"{APP}/events?ack=3"


def test_cursor_next() -> None:
    cursor = parse_events(STEP6).cursor()
    assert cursor.href == f"{APP}/events?ack=4"
    assert cursor.kind is CursorKind.NEXT
    assert not cursor.drop_transient_state and not cursor.resend_channel_params


def test_resync_only_response() -> None:
    batch = parse_events({"_links": {"resync": {"href": f"{APP}/events?ack=1"}}})
    assert batch.is_empty and batch.senders == ()
    cursor = batch.cursor()
    assert cursor.kind is CursorKind.RESYNC and cursor.href == f"{APP}/events?ack=1"
    assert cursor.drop_transient_state and not cursor.resend_channel_params


def test_resume_instead_of_next() -> None:
    data = {
        "_links": {"self": {"href": "/e?ack=9"}, "resume": {"href": "/e?ack=10"}},
        "sender": [],
    }
    cursor = parse_events(data).cursor()
    assert cursor.kind is CursorKind.RESUME
    assert cursor.drop_transient_state and cursor.resend_channel_params


def test_empty_release_with_sender_missing_or_empty() -> None:
    for data in (
        {"_links": {"self": {"href": "/e?ack=2"}, "next": {"href": "/e?ack=3"}}},
        {"_links": {"next": {"href": "/e?ack=3"}}, "sender": []},
        {"_links": {"next": {"href": "/e?ack=3"}}, "sender": [{"rel": "me", "events": []}]},
    ):
        batch = parse_events(data)
        assert batch.is_empty
        assert list(batch.events()) == []
        assert batch.cursor().href == "/e?ack=3"


def test_no_cursor_link_is_a_protocol_violation() -> None:
    with pytest.raises(ProtocolViolation):
        parse_events({"_links": {"self": {"href": "/e?ack=2"}}}).cursor()
    with pytest.raises(ProtocolViolation):
        parse_events(["not", "an", "object"])


def test_failure_reason_parsed() -> None:
    data = {
        "_links": {"next": {"href": "/e?ack=5"}},
        "sender": [
            sender(
                "communication",
                f"{APP}/communication",
                {
                    "link": {"rel": "participantInvitation", "href": "/pi/1"},
                    "status": "Failure",
                    "_embedded": {"participantInvitation": {"state": "Failed"}},
                    "reason": {
                        "code": "RemoteFailure",
                        "subcode": "Declined",
                        "message": "Your invitation was declined.",
                        "debugInfo": {},
                    },
                    "type": "completed",
                },
            )
        ],
    }
    event = next(parse_events(data).events())[1]
    assert event.failed
    assert event.reason == Reason("RemoteFailure", "Declined", "Your invitation was declined.")


def test_malformed_events_are_skipped_not_fatal() -> None:
    data = {
        "_links": {"next": {"href": "/e?ack=5"}},
        "sender": [
            "junk",
            {"rel": "conversation", "href": CONV, "events": ["junk", {"type": "Added"}]},
        ],
    }
    events = [ev for _, ev in parse_events(data).events()]
    assert len(events) == 1
    assert events[0].type == "added" and events[0].rel == "" and events[0].href is None

"""Inbound decisions without Redis: decoding, sanitising, the first-message dedupe, payloads."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest

from bridge.inbound.events import (
    InboundEvents,
    MemoryState,
    MessageBody,
    decode_body,
    first_key,
    message_id_for,
    sanitize_html,
    seen_key,
)
from bridge.session.conversations import Conversation, conversation_id
from bridge.ucwa.events import parse_events
from bridge.ucwa.notices import (
    ConversationChanged,
    IncomingInvitation,
    IncomingMessage,
    Notice,
    ParticipantChanged,
    TypingChanged,
    interpret,
)
from bridge.webhooks.endpoints import WebhookEndpoint

ACCOUNT = "toshm@contoso.com"
BASE = "https://lyncweb.contoso.com"
APP = "/ucwa/oauth/v1/applications/103"
CONV = f"{APP}/communication/conversations/eee0"
INV = f"{APP}/communication/messagingInvitations/6408"
LENE = "sip:lenea@contoso.com"
NOW = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123").decode()
HI = "data:text/plain;charset=utf-8,Hi+Tosh%0d%0a"


def endpoint(*types: str) -> WebhookEndpoint:
    return WebhookEndpoint(
        "hooks", "https://hooks.example/skype", [SECRET], frozenset(types) if types else None
    )


def hook(**options: Any) -> InboundEvents:
    endpoints = options.pop("endpoints", [endpoint()])
    return InboundEvents(endpoints, ACCOUNT, clock=lambda: NOW, **options)


def conv() -> Conversation:
    return Conversation(
        id=conversation_id(ACCOUNT, BASE + CONV),
        href=BASE + CONV,
        generation=1,
        remote=LENE,
        remote_name="Lene Aaling",
    )


def invitation(message: str | None = HI, event_type: str = "started") -> IncomingInvitation:
    return IncomingInvitation(
        href=INV,
        event_type=event_type,
        accept_href=f"{INV}/accept" if event_type == "started" else None,
        decline_href=f"{INV}/decline" if event_type == "started" else None,
        from_uri=LENE,
        from_name="Lene Aaling",
        message_data_uri=message,
        conversation_href=CONV,
        messaging_href=f"{CONV}/messaging",
        thread_id="Ac7bUftwUcVMzgTzRl+OQchCsUn35Q==",
        subject="",
    )


def message(
    number: int, plain: str | None = HI, html: str | None = None, ms: int = 1383784870271
) -> IncomingMessage:
    return IncomingMessage(
        href=f"{CONV}/messaging/messages/{number}",
        conversation_href=CONV,
        participant_href=f"{CONV}/participants/lenea@contoso.com",
        from_uri=LENE,
        from_name="Lene Aaling",
        plain_data_uri=plain,
        html_data_uri=html,
        timestamp=datetime.fromtimestamp(ms / 1000, UTC),
    )


def plain(text: str) -> str:
    return "data:text/plain;charset=utf-8;base64," + base64.b64encode(text.encode()).decode()


def texts(events: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["text"] for e in events]


# -- decoding ---------------------------------------------------------------------------------


SFB_HTML = (
    "data:text/html;charset=utf-8,%3cspan+style%3d%22font-size%3a10pt%3bfont-family%3a"
    "Segoe+UI%3bcolor%3a%23000000%3b%22%3eHello%3c%2fspan%3e"
)
SFB_SPAN = '<span style="font-size:10pt;font-family:Segoe UI;color:#000000">Hello</span>'
HTML_B64 = "data:text/html;base64," + base64.b64encode(b"<b>caf\xc3\xa9</b> &amp; co\r\n").decode()


@pytest.mark.parametrize(
    ("uris", "expected"),
    [
        ([HI], MessageBody("Hi Tosh", None)),
        ([plain("Grüße, 1+1=2\r\n")], MessageBody("Grüße, 1+1=2", None)),
        (["data:text/plain;charset=utf-8,1%2b1+%3d+2%0d%0a"], MessageBody("1+1 = 2", None)),
        ([SFB_HTML], MessageBody("Hello", SFB_SPAN)),
        ([HTML_B64], MessageBody("café & co", "<b>café</b> &amp; co")),
        # Both parts: the plain part is the text, the HTML part is kept sanitised.
        (
            [plain("plain"), "data:text/html;charset=utf-8,%3ci%3ehtml%3c%2fi%3e"],
            MessageBody("plain", "<i>html</i>"),
        ),
        (["not a data uri", HI], MessageBody("Hi Tosh", None)),
    ],
)
def test_decode_body(uris: list[str], expected: MessageBody) -> None:
    assert decode_body(uris) == expected


def test_decode_body_nothing_decodable() -> None:
    assert decode_body([None, "https://not.data/uri", "data:text/plain;base64,@@@"]) is None


# -- sanitising -------------------------------------------------------------------------------


def test_sanitize_removes_script_and_handlers() -> None:
    dirty = '<p onclick="steal()">hi<script>alert(1)</script></p><img src=x onerror=alert(1)>'
    assert sanitize_html(dirty) == "<p>hi</p>"


def test_sanitize_keeps_safe_links_only() -> None:
    html = (
        '<a href="https://example.com/a?b=1" target="_blank">ok</a>'
        '<a href="javascript:alert(1)">js</a>'
        '<a href="JaVaScRiPt:alert(1)">js2</a>'
        '<a href="data:text/html,x">data</a>'
        '<a href="/relative">rel</a>'
        '<a href="mailto:lenea@contoso.com">mail</a>'
    )
    clean = sanitize_html(html)
    assert '<a href="https://example.com/a?b=1" rel="noopener noreferrer nofollow">ok</a>' in clean
    assert '<a href="mailto:lenea@contoso.com"' in clean
    assert "javascript" not in clean.lower()
    assert "data:" not in clean and "/relative" not in clean and "target" not in clean
    assert ">js<" in clean and ">rel<" in clean  # the text stays, the link goes


def test_sanitize_keeps_formatting_and_harmless_style() -> None:
    html = (
        '<span style="color:#ff0000;position:fixed;background-image:url(x)">red</span>'
        "<b>b</b><i>i</i><u>u</u><ul><li>one</li></ul><br><iframe src=x></iframe>"
        "<style>body{display:none}</style>"
    )
    assert sanitize_html(html) == (
        '<span style="color:#ff0000">red</span><b>b</b><i>i</i><u>u</u><ul><li>one</li></ul><br>'
    )


# -- the first message: forwarded once --------------------------------------------------------


def test_first_message_forwarded_from_invitation_and_repeat_suppressed() -> None:
    h, state, c = hook(), MemoryState(), conv()
    first = h.events_for(invitation(), c, state)
    assert texts(first) == ["Hi Tosh"]
    assert h.events_for(invitation(event_type="updated"), c, state) == []
    assert h.events_for(message(2), c, state) == []  # the documented repeat
    assert texts(h.events_for(message(3, plain("Hi Tosh")), c, state)) == ["Hi Tosh"]
    assert first_key(c.id) not in state.values


def test_first_message_only_one_is_forwarded() -> None:
    h, state = hook(), MemoryState()
    assert texts(h.events_for(invitation(), conv(), state)) == ["Hi Tosh"]


def test_repeat_in_html_form_is_recognised() -> None:
    h, state, c = hook(), MemoryState(), conv()
    h.events_for(invitation(), c, state)
    html = "data:text/html;charset=utf-8,%3cspan%3eHi++Tosh%3c%2fspan%3e"
    assert h.events_for(message(2, plain=None, html=html), c, state) == []


def test_only_the_first_message_event_can_be_the_repeat() -> None:
    h, state, c = hook(), MemoryState(), conv()
    h.events_for(invitation(), c, state)
    assert texts(h.events_for(message(2, plain("something else")), c, state)) == ["something else"]
    # The user may well type the same words again later: that is a new message.
    assert texts(h.events_for(message(3), c, state)) == ["Hi Tosh"]


def test_invitation_without_message_leaves_the_messages_alone() -> None:
    h, state, c = hook(), MemoryState(), conv()
    assert h.events_for(invitation(message=None), c, state) == []
    assert texts(h.events_for(message(2), c, state)) == ["Hi Tosh"]


def test_started_and_completed_of_one_message_forward_once() -> None:
    h, state, c = hook(), MemoryState(), conv()
    assert texts(h.events_for(message(5), c, state)) == ["Hi Tosh"]
    assert h.events_for(message(5), c, state) == []


def test_replaying_against_saved_state_forwards_nothing() -> None:
    h, state, c = hook(), MemoryState(), conv()
    notices: list[Notice] = [invitation(), message(2), message(3, plain("second"))]
    assert texts([e for n in notices for e in h.events_for(n, c, state)]) == ["Hi Tosh", "second"]
    restarted = hook()
    assert [e for n in notices for e in restarted.events_for(n, c, state)] == []


def test_without_a_conversation_object_dedupe_uses_the_href() -> None:
    h, state = hook(), MemoryState()
    assert texts(h.events_for(invitation(), None, state)) == ["Hi Tosh"]
    assert h.events_for(message(2), None, state) == []
    assert first_key(conversation_id(ACCOUNT, CONV)) not in state.values


# -- payloads ---------------------------------------------------------------------------------


def test_message_received_payload() -> None:
    h, state, c = hook(), MemoryState(), conv()
    html = "data:text/html;charset=utf-8,%3cb+onclick%3d%22x()%22%3ebold%3c%2fb%3e%0d%0a"
    [event] = h.events_for(message(7, plain("bold\r\n"), html), c, state)
    message_id = message_id_for(ACCOUNT, BASE + CONV + "/messaging/messages/7")
    assert event["type"] == "message.received"
    assert event["timestamp"] == "2024-05-06T07:08:09.123Z"
    assert event["id"].startswith("evt_") and len(event["id"]) == 28
    assert event["data"] == {
        "message_id": message_id,
        "conversation": c.id,
        "from": {"uri": LENE, "name": "Lene Aaling"},
        "text": "bold",
        "html": "<b>bold</b>",
        "received_at": "2013-11-07T00:41:10.271Z",
        "account": "default",
    }
    assert seen_key(message_id) in state.values


def test_ids_are_stable_across_processes() -> None:
    one = hook().events_for(message(7), conv(), MemoryState())
    two = hook().events_for(message(7), conv(), MemoryState())
    assert one[0]["id"] == two[0]["id"]
    assert one[0]["data"]["message_id"] == two[0]["data"]["message_id"]
    assert message_id_for(ACCOUNT, "a") != message_id_for("other@contoso.com", "a")


def test_invitation_message_payload_uses_the_clock_and_the_invitation() -> None:
    [event] = hook().events_for(invitation(), conv(), MemoryState())
    assert event["data"]["received_at"] == "2024-05-06T07:08:09.123Z"
    assert event["data"]["message_id"] == message_id_for(ACCOUNT, BASE + INV)
    assert event["data"]["from"] == {"uri": LENE, "name": "Lene Aaling"}
    assert event["data"]["html"] is None


def test_undecodable_message_is_dropped_once() -> None:
    h, state = hook(), MemoryState()
    assert h.events_for(message(2, plain="data:text/plain;base64,@@@"), conv(), state) == []


# -- typing and ended -------------------------------------------------------------------------


def typing(on: bool, who: str = LENE) -> TypingChanged:
    return TypingChanged(CONV, f"{CONV}/participants/{who[4:]}", who, on)


def test_typing_off_by_default_and_needs_a_subscriber() -> None:
    assert hook().events_for(typing(True), conv(), MemoryState()) == []
    assert hook(typing_events=True).events_for(typing(True), conv(), MemoryState()) == []


def test_typing_events_on_change_only() -> None:
    h = hook(typing_events=True, endpoints=[endpoint("conversation.typing")])
    state, c = MemoryState(), conv()
    [started] = h.events_for(typing(True), c, state)
    assert started["type"] == "conversation.typing"
    assert started["data"] == {
        "conversation": c.id,
        "participant": {"uri": LENE, "name": "Lene Aaling"},
        "typing": True,
        "at": "2024-05-06T07:08:09.123Z",
        "account": "default",
    }
    assert h.events_for(typing(True), c, state) == []
    [stopped] = h.events_for(typing(False), c, state)
    assert stopped["data"]["typing"] is False
    assert h.events_for(typing(False), c, state) == []
    assert h.events_for(typing(True, "sip:" + ACCOUNT), c, state) == []  # our own typing


def test_conversation_ended_once_when_enabled() -> None:
    deleted = ConversationChanged("deleted", CONV, None, None, None, LENE, None)
    assert hook(ended_events=True).events_for(deleted, conv(), MemoryState()) == []
    h = hook(ended_events=True, endpoints=[endpoint("conversation.ended")])
    state, c = MemoryState(), conv()
    [ended] = h.events_for(deleted, c, state)
    assert ended["type"] == "conversation.ended"
    assert ended["data"] == {
        "conversation": c.id,
        "remote": {"uri": LENE, "name": "Lene Aaling"},
        "ended_at": "2024-05-06T07:08:09.123Z",
        "account": "default",
    }
    assert h.events_for(deleted, c, state) == []
    updated = ConversationChanged("updated", CONV, "Disconnected", None, None, LENE, None)
    assert h.events_for(updated, conv(), MemoryState()) == []


def test_participant_changes_produce_nothing() -> None:
    left = ParticipantChanged(CONV, f"{CONV}/participants/lenea@contoso.com", LENE, False)
    assert hook(ended_events=True).events_for(left, conv(), MemoryState()) == []


# -- from the wire ----------------------------------------------------------------------------


def test_documented_trace_forwards_hi_tosh_once() -> None:
    """ReceiveAnIM.md steps 8 and 16, parsed and interpreted as the poller does."""
    inv = {
        "direction": "Incoming",
        "state": "Connecting",
        "_links": {
            "self": {"href": INV},
            "conversation": {"href": CONV},
            "accept": {"href": f"{INV}/accept"},
            "messaging": {"href": f"{CONV}/messaging"},
            "message": {"href": HI},
        },
        "_embedded": {"from": {"name": "Lene Aaling", "uri": LENE}},
    }
    msg = {
        "direction": "Incoming",
        "timeStamp": "/Date(1383784870271)/",
        "_links": {
            "self": {"href": f"{CONV}/messaging/messages/2"},
            "participant": {"href": f"{CONV}/participants/lenea@contoso.com", "title": "Lene"},
            "plainMessage": {"href": HI},
        },
    }
    step8 = {
        "sender": [
            {
                "rel": "communication",
                "href": f"{APP}/communication",
                "events": [
                    {
                        "link": {"rel": "messagingInvitation", "href": INV},
                        "type": "started",
                        "_embedded": {"messagingInvitation": inv},
                    }
                ],
            }
        ],
        "_links": {"next": {"href": f"{APP}/events?ack=2"}},
    }
    step16 = {
        "sender": [
            {
                "rel": "conversation",
                "href": CONV,
                "events": [
                    {
                        "link": {"rel": "message", "href": f"{CONV}/messaging/messages/2"},
                        "type": "completed",
                        "status": "Success",
                        "_embedded": {"message": msg},
                    }
                ],
            }
        ],
        "_links": {"next": {"href": f"{APP}/events?ack=3"}},
    }
    h, state = hook(), MemoryState()
    events = [
        e
        for data in (step8, step16)
        for n in interpret(parse_events(data))
        for e in h.events_for(n, None, state)
    ]
    assert texts(events) == ["Hi Tosh"]
    assert events[0]["data"]["from"] == {"uri": LENE, "name": "Lene Aaling"}


def test_sanitize_drops_style_values_that_could_run_or_fetch() -> None:
    html = '<span style="color:expression(alert(1));font-size:12px;color:red\\;">x</span>'
    assert sanitize_html(html) == '<span style="font-size:12px">x</span>'

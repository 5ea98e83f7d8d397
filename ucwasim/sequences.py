"""The event sequences a real server emits, in the documented order (SendAnIM.md, ReceiveAnIM.md).

Each function snapshots the resources at call time and queues events on one application.
"""

from __future__ import annotations

from collections.abc import Callable

from ucwasim import render
from ucwasim.channel import Priority
from ucwasim.model import Application, Conversation, Invitation, Message


def reason(code: str, subcode: str | None, message: str) -> dict[str, str]:
    out = {"code": code}
    if subcode:
        out["subcode"] = subcode
    out["message"] = message
    return out


def _comm(app: Application, body: dict, priority: Priority = Priority.HIGH) -> None:
    app.channel.emit("communication", app.href + "/communication", body, priority)


def _conv(
    conv: Conversation,
    body: dict,
    on_delivered: Callable[[], None] | None = None,
    key: object | None = None,
) -> None:
    conv.app.channel.emit("conversation", conv.href, body, Priority.HIGH, on_delivered, key)


def _typing_in(conv: Conversation) -> dict[str, str]:
    return render.link(conv.messaging_href + "/typingParticipants") | {"rel": "typingParticipants"}


def _in(rel: str, href: str, title: str) -> dict[str, str]:
    return {"rel": rel, "href": href, "title": title}


def made_available(app: Application) -> None:
    me_href = app.href + "/me"
    app.channel.emit("me", me_href, render.event("updated", "me", me_href), Priority.MEDIUM)
    for rel in ("presence", "note", "location"):
        body = render.event("added", rel, f"{me_href}/{rel}")
        app.channel.emit("me", me_href, body, Priority.MEDIUM)
    communication_updated(app)


def communication_updated(app: Application) -> None:
    href = app.href + "/communication"
    body = render.event("updated", "communication", href, embedded=render.communication(app))
    _comm(app, body, Priority.MEDIUM)


def invitation_event(
    inv: Invitation,
    kind: str,
    status: str | None = None,
    why: dict[str, str] | None = None,
) -> None:
    embedded = render.invitation(inv)
    body = render.event(
        kind, "messagingInvitation", inv.href, embedded=embedded, status=status, reason=why
    )
    _comm(inv.conversation.app, body)


def conversation_event(conv: Conversation, kind: str) -> None:
    embedded = render.conversation(conv) if kind != "deleted" else None
    _comm(conv.app, render.event(kind, "conversation", conv.href, embedded=embedded))


def messaging_updated(conv: Conversation) -> None:
    body = render.event(
        "updated", "messaging", conv.messaging_href, embedded=render.messaging(conv)
    )
    _conv(conv, body)


def local_participant_added(conv: Conversation) -> None:
    body = render.event(
        "added",
        "localParticipant",
        conv.local_href,
        title=conv.app.account.name,
        embedded=render.participant(conv, local=True),
    )
    _conv(conv, body)


def remote_participant(conv: Conversation, kind: str) -> None:
    _conv(conv, render.event(kind, "participant", conv.remote_href, title=conv.peer_name))


def participant_messaging_added(conv: Conversation, local: bool) -> None:
    if local:
        name = conv.app.account.name
        body = render.event(
            "added",
            "participantMessaging",
            conv.local_href + "/messaging",
            in_=_in("localParticipant", conv.local_href, name),
            embedded=render.participant_messaging(conv, local=True),
        )
    else:
        body = render.event(
            "added",
            "participantMessaging",
            conv.remote_href + "/messaging",
            in_=_in("participant", conv.remote_href, conv.peer_name),
        )
    _conv(conv, body)


def outgoing_started(inv: Invitation, new_conversation: bool) -> None:
    conv = inv.conversation
    invitation_event(inv, "started")
    if new_conversation:
        conversation_event(conv, "added")
        local_participant_added(conv)
    messaging_updated(conv)


def outgoing_connected(inv: Invitation, first_join: bool) -> None:
    conv = inv.conversation
    conversation_event(conv, "updated")
    if first_join:
        remote_participant(conv, "added")
    participant_messaging_added(conv, local=False)
    participant_messaging_added(conv, local=True)
    messaging_updated(conv)
    invitation_event(inv, "completed", status="Success")


def incoming_started(inv: Invitation, new_conversation: bool) -> None:
    conv = inv.conversation
    invitation_event(inv, "started")
    if new_conversation:
        conversation_event(conv, "added")
        local_participant_added(conv)
        remote_participant(conv, "added")
    else:
        messaging_updated(conv)
    inv.answer_links = False
    invitation_event(inv, "updated")


def incoming_accepted(inv: Invitation) -> None:
    conv = inv.conversation
    messaging_updated(conv)
    conversation_event(conv, "updated")
    participant_messaging_added(conv, local=True)
    participant_messaging_added(conv, local=False)
    remote_participant(conv, "updated")
    invitation_event(inv, "completed", status="Success")


def invitation_failed(inv: Invitation, why: dict[str, str]) -> None:
    invitation_event(inv, "completed", "Failure", why)


def message_completed(
    conv: Conversation,
    msg: Message,
    why: dict[str, str] | None = None,
    on_delivered: Callable[[], None] | None = None,
) -> None:
    body = render.event(
        "completed",
        "message",
        render.message_href(conv, msg),
        embedded=render.message(conv, msg),
        status="Success" if why is None else "Failure",
        reason=why,
    )
    _conv(conv, body, on_delivered, key=msg if msg.direction == "Incoming" else None)


def typing(conv: Conversation, kind: str) -> None:
    body = render.event(
        kind, "participant", conv.remote_href, title=conv.peer_name, in_=_typing_in(conv)
    )
    _conv(conv, body)


def ended_locally(conv: Conversation) -> None:
    """stopMessaging / DELETE conversation: the local side leaves."""
    messaging_updated(conv)
    if conv.remote_joined:
        remote_participant(conv, "deleted")
    conversation_event(conv, "updated")
    conversation_event(conv, "deleted")


def remote_left(conv: Conversation) -> None:
    remote_participant(conv, "deleted")
    messaging_updated(conv)
    conversation_event(conv, "updated")
    conversation_event(conv, "deleted")


def remote_stopped_messaging(conv: Conversation) -> None:
    body = render.event(
        "deleted",
        "participantMessaging",
        conv.remote_href + "/messaging",
        in_=_in("participant", conv.remote_href, conv.peer_name),
    )
    _conv(conv, body)
    messaging_updated(conv)
    conversation_event(conv, "updated")

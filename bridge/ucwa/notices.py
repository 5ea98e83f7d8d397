"""What an event means to the bridge: outcomes of outbound operations, conversation and messaging
state, incoming invitations and messages, typing and participants — as plain value objects.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from bridge.ucwa.events import Event, EventBatch, Reason, Sender
from bridge.ucwa.links import (
    embedded,
    embedded_list,
    link,
    link_title,
    parse_ms_date,
    sip_uri_from_href,
)


@dataclass(frozen=True)
class InvitationOutcome:
    """A messagingInvitation ``completed``: Success (connected) or Failure with a reason."""

    href: str | None
    direction: str | None
    success: bool
    state: str | None
    reason: Reason | None
    operation_id: str | None
    conversation_href: str | None
    messaging_href: str | None
    thread_id: str | None
    remote_uri: str | None


@dataclass(frozen=True)
class MessagingChanged:
    """The messaging modality of a conversation changed state; carries its action links."""

    href: str | None
    conversation_href: str | None
    state: str | None
    send_message_href: str | None
    stop_messaging_href: str | None
    add_messaging_href: str | None
    set_is_typing_href: str | None
    negotiated_formats: tuple[str, ...]
    reason: Reason | None


@dataclass(frozen=True)
class ConversationChanged:
    change: str  # added | updated | deleted
    href: str | None
    state: str | None
    thread_id: str | None
    subject: str | None
    remote_uri: str | None
    messaging_href: str | None


@dataclass(frozen=True)
class MessageOutcome:
    """An outgoing message ``completed``: correlate by ``href`` (the POST's Location)."""

    href: str | None
    success: bool
    reason: Reason | None
    operation_id: str | None
    conversation_href: str | None


@dataclass(frozen=True)
class IncomingInvitation:
    """An incoming messagingInvitation (``started`` carries accept/decline, ``updated`` may not)."""

    href: str | None
    event_type: str
    accept_href: str | None
    decline_href: str | None
    from_uri: str | None
    from_name: str | None
    message_data_uri: str | None
    conversation_href: str | None
    messaging_href: str | None
    thread_id: str | None
    subject: str | None


@dataclass(frozen=True)
class IncomingMessage:
    href: str | None
    conversation_href: str | None
    participant_href: str | None
    from_uri: str | None
    from_name: str | None
    plain_data_uri: str | None
    html_data_uri: str | None
    timestamp: datetime | None

    @property
    def dedupe_key(self) -> str:
        return f"message:{self.href}"


@dataclass(frozen=True)
class TypingChanged:
    conversation_href: str | None
    participant_href: str | None
    participant_uri: str | None
    typing: bool


@dataclass(frozen=True)
class ParticipantChanged:
    conversation_href: str | None
    participant_href: str | None
    uri: str | None
    joined: bool


@dataclass(frozen=True)
class NeedsFetch:
    """A link-only event the bridge cares about: GET ``href`` to learn what happened."""

    rel: str
    href: str | None
    event_type: str


Notice = (
    InvitationOutcome
    | MessagingChanged
    | ConversationChanged
    | MessageOutcome
    | IncomingInvitation
    | IncomingMessage
    | TypingChanged
    | ParticipantChanged
    | NeedsFetch
)


def first_message_key(conversation_href: str | None, text: str) -> str:
    """Key shared by an invitation's first message and the message event that repeats it."""
    digest = hashlib.sha256(text.strip().encode("utf-8")).hexdigest()[:16]
    return f"first:{conversation_href}:{digest}"


def _s(resource: Mapping[str, Any] | None, key: str) -> str | None:
    value = resource.get(key) if resource else None
    return value if isinstance(value, str) else None


def _conversation_of(sender: Sender, resource: Mapping[str, Any] | None) -> str | None:
    return link(resource, "conversation") or (sender.href if sender.rel == "conversation" else None)


def _invitation(sender: Sender, event: Event, remotes: Mapping[str, str]) -> Notice | None:
    res = event.embedded
    if res is None:
        return NeedsFetch(event.rel, event.href, event.type)
    direction = _s(res, "direction")
    conversation = link(res, "conversation")
    if direction == "Incoming" and event.type in ("started", "updated"):
        sender_res = embedded(res, "from")
        return IncomingInvitation(
            href=event.href or link(res, "self"),
            event_type=event.type,
            accept_href=link(res, "accept"),
            decline_href=link(res, "decline"),
            from_uri=_s(sender_res, "uri") or sip_uri_from_href(link(res, "from")),
            from_name=_s(sender_res, "name") or link_title(res, "from"),
            message_data_uri=link(res, "message"),
            conversation_href=conversation,
            messaging_href=link(res, "messaging"),
            thread_id=_s(res, "threadId"),
            subject=_s(res, "subject"),
        )
    if event.type != "completed":
        return None
    return InvitationOutcome(
        href=event.href or link(res, "self"),
        direction=direction,
        success=event.succeeded,
        state=_s(res, "state"),
        reason=event.reason,
        operation_id=_s(res, "operationId"),
        conversation_href=conversation,
        messaging_href=link(res, "messaging"),
        thread_id=_s(res, "threadId"),
        remote_uri=remotes.get(conversation or "") if conversation else None,
    )


def _message(sender: Sender, event: Event) -> Notice | None:
    res = event.embedded
    if res is None:
        return NeedsFetch(event.rel, event.href, event.type) if event.type == "completed" else None
    direction = _s(res, "direction")
    conversation = sender.href if sender.rel == "conversation" else None
    if direction == "Incoming" and event.type in ("started", "completed") and not event.failed:
        participant = link(res, "participant")
        return IncomingMessage(
            href=event.href or link(res, "self"),
            conversation_href=conversation,
            participant_href=participant,
            from_uri=sip_uri_from_href(participant) or sip_uri_from_href(link(res, "contact")),
            from_name=link_title(res, "participant"),
            plain_data_uri=link(res, "plainMessage"),
            html_data_uri=link(res, "htmlMessage"),
            timestamp=parse_ms_date(res.get("timeStamp")),
        )
    if direction == "Outgoing" and event.type == "completed":
        return MessageOutcome(
            href=event.href or link(res, "self"),
            success=event.succeeded,
            reason=event.reason,
            operation_id=_s(res, "operationId"),
            conversation_href=conversation,
        )
    return None


def _messaging(sender: Sender, event: Event) -> Notice | None:
    res = event.embedded
    if res is None:
        return NeedsFetch(event.rel, event.href, event.type)
    formats = res.get("negotiatedMessageFormats")
    return MessagingChanged(
        href=event.href or link(res, "self"),
        conversation_href=_conversation_of(sender, res),
        state=_s(res, "state"),
        send_message_href=link(res, "sendMessage"),
        stop_messaging_href=link(res, "stopMessaging"),
        add_messaging_href=link(res, "addMessaging"),
        set_is_typing_href=link(res, "setIsTyping"),
        negotiated_formats=tuple(f for f in formats if isinstance(f, str))
        if isinstance(formats, list)
        else (),
        reason=event.reason,
    )


def _participant(sender: Sender, event: Event) -> Notice | None:
    conversation = sender.href if sender.rel == "conversation" else None
    if event.in_rel == "typingParticipants":
        if event.type not in ("added", "deleted"):
            return None
        return TypingChanged(
            conversation, event.href, sip_uri_from_href(event.href), event.type == "added"
        )
    if event.in_rel not in (None, "participants") or event.type not in ("added", "deleted"):
        return None  # added in lobby / promoted / admitted: not a join
    uri = _s(event.embedded, "uri") or sip_uri_from_href(event.href)
    return ParticipantChanged(conversation, event.href, uri, event.type == "added")


def classify(
    sender: Sender, event: Event, remotes: Mapping[str, str] | None = None
) -> Notice | None:
    """The bridge's reading of one event, or None if it does not matter to the bridge."""
    remotes = remotes or {}
    if event.rel == "messagingInvitation":
        return _invitation(sender, event, remotes)
    if event.rel == "message":
        return _message(sender, event)
    if event.rel == "messaging":
        return _messaging(sender, event)
    if event.rel == "participant":
        return _participant(sender, event)
    if event.rel == "conversation" and event.type in ("added", "updated", "deleted"):
        res = event.embedded
        return ConversationChanged(
            change=event.type,
            href=event.href,
            state=_s(res, "state"),
            thread_id=_s(res, "threadId"),
            subject=_s(res, "subject"),
            remote_uri=remotes.get(event.href or ""),
            messaging_href=link(res, "messaging"),
        )
    return None


def remote_uris(batch: EventBatch) -> dict[str, str]:
    """Conversation href → remote SIP URI, as far as this batch reveals it."""
    found: dict[str, str] = {}
    for sender, event in batch.events():
        res = event.embedded
        if event.rel == "messagingInvitation" and res is not None:
            conversation = link(res, "conversation")
            if not conversation:
                continue
            if _s(res, "direction") == "Incoming":
                uri = _s(embedded(res, "from"), "uri") or sip_uri_from_href(link(res, "from"))
            else:
                accepted = embedded_list(res, "acceptedByParticipant")
                uri = (_s(accepted[0], "uri") if accepted else None) or sip_uri_from_href(
                    link(res, "to")
                )
            if uri:
                found.setdefault(conversation, uri)
        elif (
            event.rel == "participant"
            and event.type == "added"
            and event.in_rel is None
            and sender.rel == "conversation"
            and sender.href
        ):
            uri = _s(res, "uri") or sip_uri_from_href(event.href)
            if uri:
                found.setdefault(sender.href, uri)
    return found


def conversation_hrefs(batch: EventBatch) -> set[str]:
    """The conversation hrefs, as the batch writes them, whose remote ``classify`` looks up: an
    invitation's conversation link and a conversation event's own href. An event that cannot be
    read adds none (``classify`` sets it aside)."""
    found: set[str] = set()
    for _sender, event in batch.events():
        try:
            if event.rel == "conversation" and event.href:
                found.add(event.href)
            elif event.rel == "messagingInvitation" and event.embedded is not None:
                conversation = link(event.embedded, "conversation")
                if conversation:
                    found.add(conversation)
        except Exception:  # a malformed event is classify's to report
            continue
    return found


def interpret(batch: EventBatch, known_remotes: Mapping[str, str] | None = None) -> list[Notice]:
    """Every notice in the batch, in server order, with remote URIs filled in where known."""
    remotes = {**(known_remotes or {}), **remote_uris(batch)}
    notices = (classify(sender, event, remotes) for sender, event in batch.events())
    return [n for n in notices if n is not None]


class InvitationCache:
    """Keeps accept/decline links from ``started``: a later ``updated`` event drops them."""

    def __init__(self, max_entries: int = 1000) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[str | None, str | None]] = OrderedDict()

    def merge(self, notice: IncomingInvitation) -> IncomingInvitation:
        if not notice.href:
            return notice
        cached = self._entries.get(notice.href, (None, None))
        accept = notice.accept_href or cached[0]
        decline = notice.decline_href or cached[1]
        self._entries[notice.href] = (accept, decline)
        self._entries.move_to_end(notice.href)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return replace(notice, accept_href=accept, decline_href=decline)

    def forget(self, href: str) -> None:
        self._entries.pop(href, None)

    def __len__(self) -> int:
        return len(self._entries)

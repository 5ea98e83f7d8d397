"""JSON representations of the UCWA resources, shaped like the reference traces.

Only the application root and discovery use absolute hrefs; everything here is relative.
"""

from __future__ import annotations

import zlib
from typing import Any

from ucwasim.datauri import encode, encode_html, encode_plain
from ucwasim.model import Application, Conversation, Invitation, Message, sip_user


def link(href: str, title: str | None = None) -> dict[str, str]:
    out = {"href": href}
    if title is not None:
        out["title"] = title
    return out


def event(
    kind: str,
    rel: str,
    href: str,
    *,
    title: str | None = None,
    embedded: dict[str, Any] | None = None,
    in_: dict[str, str] | None = None,
    status: str | None = None,
    reason: dict[str, str] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"link": {"rel": rel, **link(href, title)}}
    if in_ is not None:
        out["in"] = in_
    if status is not None:
        out["status"] = status
    if embedded is not None:
        out["_embedded"] = {rel: embedded}
    if reason is not None:
        out["reason"] = reason
    out["type"] = kind
    return out


def application(app: Application) -> dict[str, Any]:
    return {
        "culture": app.culture,
        "userAgent": app.user_agent,
        "type": "Browser",
        "endpointId": app.endpoint_id,
        # application_ref.md (Properties): "Id for individual registrations ... used for
        # telemetry purposes"; its sample's id ("samplevalue") is not the 192 of its href, and
        # UCWA-NOTES.md §2.4 reads it so. A value of its own, then, so that a client building
        # paths from it fails here as it would on a real server.
        "id": app.telemetry_id,
        "_links": {
            "self": link(app.href),
            "policies": link(app.href + "/policies"),
            "batch": link(app.href + "/batch"),
            "events": link(app.channel.href + "?ack=1"),
        },
        "_embedded": {
            "me": me(app),
            "people": people(app),
            "onlineMeetings": online_meetings(app),
            "communication": communication(app),
        },
        "rel": "application",
    }


def me(app: Application) -> dict[str, Any]:
    # me_ref.md and the traces (CreateAnApplication.md, MeDashboard.md) show no etag on me.
    base = app.href + "/me"
    links = {"self": link(base)}
    if app.available:
        for rel in ("note", "presence", "location", "reportMyActivity"):
            links[rel] = link(f"{base}/{rel}")
    else:
        links["makeMeAvailable"] = link(base + "/makeMeAvailable")
    links["callForwardingSettings"] = link(base + "/callForwardingSettings")
    links["phones"] = link(base + "/phones")
    links["photo"] = link(f"{app.href}/photos/{sip_user(app.account.sip)}")
    return {
        "name": app.account.name,
        "uri": app.account.sip,
        "emailAddresses": [sip_user(app.account.sip)],
        "_links": links,
        "rel": "me",
    }


def people(app: Application) -> dict[str, Any]:
    base = app.href + "/people"
    names = ("presenceSubscriptions", "subscribedContacts", "search")
    links = {"self": link(base), **{n: link(f"{base}/{n}") for n in names}}
    links["myContacts"] = link(base + "/contacts")
    links["myGroups"] = link(base + "/groups")
    return {"_links": links, "rel": "people"}


def online_meetings(app: Application) -> dict[str, Any]:
    base = app.href + "/onlineMeetings"
    return {
        "_links": {"self": link(base), "myOnlineMeetings": link(base + "/myOnlineMeetings")},
        "rel": "onlineMeetings",
    }


def communication(app: Application) -> dict[str, Any]:
    base = app.href + "/communication"
    return {
        app.put_marker: "please pass this in a PUT request",
        "supportedModalities": list(app.modalities),
        "supportedMessageFormats": list(app.formats),
        "_links": {
            "self": link(base),
            "startPhoneAudio": link(base + "/phoneAudioInvitations"),
            "conversations": link(base + "/conversations?filter=active"),
            "startMessaging": link(base + "/messagingInvitations"),
            "startOnlineMeeting": link(base + "/onlineMeetingInvitations?onlineMeetingUri=adhoc"),
            "joinOnlineMeeting": link(base + "/onlineMeetingInvitations"),
        },
        "rel": "communication",
        "etag": app.etag,
    }


def contact_etag(sip: str, name: str) -> str:
    """A number as a string, like the contact etags of GetAContactData.md; it changes with
    the contact's data."""
    return str(zlib.crc32(f"{sip}\n{name}".encode()))


def contact(app: Application, sip: str, name: str) -> dict[str, Any]:
    # Fields, links and their paths as in GetAContactData.md and SearchForUsersContact.md
    # (real-server traces); contact_ref.md lists the same properties and links.
    user = sip_user(sip)
    base = f"{app.href}/people/{user}"
    return {
        "uri": sip,
        "sourceNetwork": "SameEnterprise",
        "emailAddresses": [user],
        "type": "User",
        "name": name,
        "_links": {
            "self": link(base),
            "contactPhoto": link(f"{app.href}/photos/{user}"),
            "contactPresence": link(base + "/presence"),
            "contactLocation": link(base + "/location"),
            "contactNote": link(base + "/note"),
            "contactSupportedModalities": link(base + "/supportedMedia"),
            "contactPrivacyRelationship": link(base + "/privacyRelationship"),
        },
        "rel": "contact",
        "etag": contact_etag(sip, name),
    }


def conversation(conv: Conversation) -> dict[str, Any]:
    # conversation_ref.md and the IM traces (SendAnIM.md, ReceiveAnIM.md) show no etag here.
    base = conv.href
    links = {"self": link(base)}
    for rel in ("applicationSharing", "audioVideo", "dataCollaboration", "messaging"):
        links[rel] = link(f"{base}/{rel}")
    links["phoneAudio"] = link(base + "/phoneAudio")
    links["participants"] = link(base + "/participants")
    if conv.state == "Connected":
        links["localParticipant"] = link(conv.local_href, conv.app.account.name)
        links["addParticipant"] = link(
            f"{conv.app.href}/communication/participantInvitations?conversation={conv.id}"
        )
    messaging_on = conv.messaging_state == "Connected" or conv.state == "Incoming"
    return {
        "state": conv.state,
        "threadId": conv.thread_id,
        "subject": conv.subject,
        "activeModalities": ["Messaging"] if messaging_on else [],
        "importance": conv.importance,
        "recording": False,
        "participantCount": 2 if conv.remote_joined else 1,
        "_links": links,
        "rel": "conversation",
    }


def messaging(conv: Conversation) -> dict[str, Any]:
    base = conv.messaging_href
    links = {"self": link(base), "conversation": link(conv.href)}
    out: dict[str, Any] = {"state": conv.messaging_state}
    if conv.messaging_state in ("Connecting", "Connected"):
        links["stopMessaging"] = link(base + "/terminate")
    if conv.messaging_state == "Connected":
        out["negotiatedMessageFormats"] = list(conv.negotiated)
        links["sendMessage"] = link(base + "/messages")
        links["setIsTyping"] = link(base + "/typing")
        links["typingParticipants"] = link(base + "/typingParticipants")
    if conv.messaging_state == "Disconnected" and conv.alive:
        links["addMessaging"] = link(base + "/addMessaging")
    out["_links"] = links
    out["rel"] = "messaging"
    return out


def participant(conv: Conversation, local: bool) -> dict[str, Any]:
    if local:
        account = conv.app.account
        return {
            "sourceNetwork": "SameEnterprise",
            "anonymous": False,
            "name": account.name,
            "uri": account.sip,
            "_links": {
                "self": link(conv.local_href),
                "conversation": link(conv.href),
                "me": link(conv.app.href + "/me"),
            },
            "rel": "participant",
        }
    contact_href = f"{conv.app.href}/people/{sip_user(conv.peer_sip)}"
    return {
        "sourceNetwork": "SameEnterprise",
        "anonymous": False,
        "name": conv.peer_name,
        "uri": conv.peer_sip,
        "_links": {
            "self": link(conv.remote_href),
            "conversation": link(conv.href),
            "contact": link(contact_href),
            "contactPresence": link(contact_href + "/presence"),
            "contactPhoto": link(f"{conv.app.href}/photos/{sip_user(conv.peer_sip)}"),
        },
        "rel": "participant",
    }


def participant_messaging(conv: Conversation, local: bool) -> dict[str, Any]:
    href = conv.local_href if local else conv.remote_href
    title = conv.app.account.name if local else conv.peer_name
    return {
        "_links": {"self": link(href + "/messaging"), "participant": link(href, title)},
        "rel": "participantMessaging",
    }


def invitation(inv: Invitation) -> dict[str, Any]:
    conv = inv.conversation
    app = conv.app
    out: dict[str, Any] = {
        "direction": inv.direction,
        "importance": conv.importance,
        "threadId": conv.thread_id,
        "state": inv.state,
        "subject": conv.subject,
    }
    if inv.operation_id is not None:
        out["operationId"] = inv.operation_id
    links = {"self": link(inv.href)}
    if inv.direction == "Outgoing":
        links["from"] = link(conv.local_href, app.account.name)
        links["to"] = link(f"{app.href}/people/{sip_user(conv.peer_sip)}")
        if inv.state == "Connecting":
            links["cancel"] = link(inv.href + "/cancel")
    else:
        links["to"] = link(f"{app.href}/people/{sip_user(app.account.sip)}")
    links["conversation"] = link(conv.href)
    if inv.direction == "Incoming" and inv.state == "Connecting" and inv.answer_links:
        links["accept"] = link(inv.href + "/accept")
        links["decline"] = link(inv.href + "/decline")
    links["messaging"] = link(conv.messaging_href)
    if inv.first is not None:
        href = encode_html(inv.first.html) if inv.first.html else encode_plain(inv.first.text)
        links["message"] = link(href)
    out["_links"] = links
    if inv.direction == "Incoming":
        out["_embedded"] = {"from": participant(conv, local=False)}
    elif inv.state == "Connected":
        out["_embedded"] = {"acceptedByParticipant": [participant(conv, local=False)]}
    out["rel"] = "messagingInvitation"
    return out


def message_href(conv: Conversation, msg: Message) -> str:
    return f"{conv.messaging_href}/messages/{msg.number}"


def message(conv: Conversation, msg: Message, full: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"direction": msg.direction, "timeStamp": f"/Date({msg.time_ms})/"}
    if full:
        out["status"] = msg.status
    if msg.operation_id:
        # "included in every event about the operation" (OperationResource.md), not only in GET
        out["operationId"] = msg.operation_id
    links = {"self": link(message_href(conv, msg))}
    if msg.direction == "Incoming":
        links["contact"] = link(f"{conv.app.href}/people/{sip_user(conv.peer_sip)}")
        links["participant"] = link(conv.remote_href, conv.peer_name)
    links["messaging"] = link(conv.messaging_href)
    if msg.direction == "Incoming" or full:
        rel, href = encode(msg.content, "Html" in conv.negotiated)
        links[rel] = link(href)
    out["_links"] = links
    out["rel"] = "message"
    return out

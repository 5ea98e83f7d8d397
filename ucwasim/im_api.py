"""Handlers for messaging: invitations, conversations, messaging, messages, participants.

Outcomes of operations are reported on the event channel by the switchboard, not here.
"""

from __future__ import annotations

import re
from typing import Any

from werkzeug.wrappers import Response

from ucwasim import render
from ucwasim.context import (
    Ctx,
    empty,
    json_response,
    optional_text,
    required_text,
    unsupported_media_type,
)
from ucwasim.datauri import Content, DataUriError, decode
from ucwasim.errors import UcwaError, bad_parameter, conflict, not_found
from ucwasim.model import Conversation, Invitation, sip_user

SIP_URI = re.compile(r"^sip:[^@\s;:]+@[^@\s;:]+$", re.IGNORECASE)
IMPORTANCE = ("Normal", "Urgent", "Emergency")
# startMessaging_ref.md gives no length for ``to``; the longest contact URI the reference gives
# is 250 characters (removeContactFromAllGroups_ref.md, contactUri).
MAX_TO_CHARS = 250
DECLINE_REASONS = ("Unknown", "Local", "Global", "DoNotDisturb", "Busy", "NotAcceptable")


def too_large(limit: int) -> UcwaError:
    return UcwaError(413, "EntityTooLarge", f"The message is longer than {limit} characters.")


def _first_message(ctx: Ctx, values: dict[str, Any]) -> Content | None:
    links = values.get("_links")
    if links is None:
        return None
    if not isinstance(links, dict):
        raise bad_parameter("_links", "_links must be an object.")
    message = links.get("message")
    if message is None:
        return None
    href = message.get("href") if isinstance(message, dict) else None
    if not isinstance(href, str):
        raise bad_parameter("message", "_links.message.href must be a data URI.")
    try:
        content = decode(href)
    except DataUriError as exc:
        raise bad_parameter("message", str(exc)) from exc
    limit = ctx.world.cfg.max_message_chars
    if len(content.html or content.text) > limit:
        raise too_large(limit)
    return content


def start_messaging(ctx: Ctx) -> Response:
    values = ctx.input()
    to = required_text(values, "to", MAX_TO_CHARS)
    if not SIP_URI.match(to):
        raise bad_parameter("to", "to must be a SIP URI such as sip:name@domain.")
    operation_id = optional_text(values, "operationId", 50)
    subject = optional_text(values, "subject", 250) or ""
    thread_id = optional_text(values, "threadId", 250)
    importance = optional_text(values, "importance", 20) or "Normal"
    canonical = {i.lower(): i for i in IMPORTANCE}
    if importance.lower() not in canonical:
        raise bad_parameter("importance", f"{importance!r} is not a valid importance.")
    first = _first_message(ctx, values)
    inv = ctx.board.start_messaging(
        ctx.application,
        "sip:" + to[4:].lower(),
        subject,
        canonical[importance.lower()],
        operation_id,
        thread_id,
        first,
    )
    return empty(201, {"Location": inv.href})


def _invitation(ctx: Ctx, inv_id: str) -> Invitation:
    inv = ctx.application.invitations.get(inv_id)
    if inv is None:
        raise not_found("The invitation does not exist.")
    return inv


def get_invitation(ctx: Ctx, inv_id: str) -> Response:
    return json_response(render.invitation(_invitation(ctx, inv_id)))


def _pending(inv: Invitation, direction: str) -> Invitation:
    if inv.direction != direction:
        raise not_found()
    if inv.state != "Connecting" or not inv.conversation.alive:
        raise conflict("The invitation is no longer pending.")
    return inv


def accept(ctx: Ctx, inv_id: str) -> Response:
    ctx.board.accept(_pending(_invitation(ctx, inv_id), "Incoming"))
    return empty()


def decline(ctx: Ctx, inv_id: str) -> Response:
    inv = _pending(_invitation(ctx, inv_id), "Incoming")
    reason = optional_text(ctx.input(), "reason", 50)
    if reason is not None and reason.lower() not in {r.lower() for r in DECLINE_REASONS}:
        raise bad_parameter("reason", f"{reason!r} is not a valid decline reason.")
    ctx.board.decline(inv)
    return empty()


def cancel(ctx: Ctx, inv_id: str) -> Response:
    ctx.board.cancel(_pending(_invitation(ctx, inv_id), "Outgoing"))
    return empty()


def list_conversations(ctx: Ctx) -> Response:
    app = ctx.application
    base = app.href + "/communication/conversations"
    filt = ctx.query("filter")
    links: dict[str, Any] = {"self": render.link(base + (f"?filter={filt}" if filt else ""))}
    convs = [c for c in app.conversations.values() if c.alive]
    if convs:
        links["conversation"] = [render.link(c.href) for c in convs]
    return json_response({"_links": links, "rel": "conversations"})


def _conversation(ctx: Ctx, conv_id: str) -> Conversation:
    conv = ctx.application.conversations.get(conv_id)
    if conv is None or not conv.alive:
        raise UcwaError(
            404, "NotFound", "The conversation does not exist.", subcode="ConversationNotFound"
        )
    return conv


def get_conversation(ctx: Ctx, conv_id: str) -> Response:
    return json_response(render.conversation(_conversation(ctx, conv_id)))


def delete_conversation(ctx: Ctx, conv_id: str) -> Response:
    ctx.board.end_conversation(_conversation(ctx, conv_id))
    return empty()


def get_messaging(ctx: Ctx, conv_id: str) -> Response:
    return json_response(render.messaging(_conversation(ctx, conv_id)))


def _connected(conv: Conversation) -> Conversation:
    if conv.messaging_state != "Connected":
        raise conflict(f"Messaging is {conv.messaging_state}, not Connected.")
    return conv


def send_message(ctx: Ctx, conv_id: str) -> Response:
    conv = _connected(_conversation(ctx, conv_id))
    media = ctx.media_type()
    if media not in ("text/plain", "text/html"):
        raise unsupported_media_type(media or "none")
    if media == "text/html" and "Html" not in conv.negotiated:
        raise UcwaError(415, "UnsupportedMediaType", "Html is not a negotiated message format.")
    charset = ctx.request.mimetype_params.get("charset", "utf-8")
    try:
        text = ctx.body_bytes().decode(charset)
    except (LookupError, UnicodeDecodeError) as exc:
        raise bad_parameter("message", "The message is not valid text.") from exc
    if not text:
        raise bad_parameter("message", "The message is empty.")
    limit = ctx.world.cfg.max_message_chars
    if len(text) > limit:
        raise too_large(limit)
    content = Content.from_html(text) if media == "text/html" else Content.plain(text)
    operation_id = ctx.query("operationId") or ctx.query("OperationContext")
    msg = ctx.board.send_message(conv, content, operation_id)
    return empty(201, {"Location": render.message_href(conv, msg)})


def list_messages(ctx: Ctx, conv_id: str) -> Response:
    conv = _conversation(ctx, conv_id)
    links: dict[str, Any] = {"self": render.link(conv.messaging_href + "/messages")}
    if conv.messages:
        links["message"] = [
            render.link(render.message_href(conv, m)) for m in conv.messages.values()
        ]
    return json_response({"_links": links, "rel": "messages"})


def get_message(ctx: Ctx, conv_id: str, number: str) -> Response:
    conv = _conversation(ctx, conv_id)
    msg = conv.messages.get(int(number)) if number.isdigit() else None
    if msg is None:
        raise not_found("The message does not exist.")
    return json_response(render.message(conv, msg, full=True))


def set_is_typing(ctx: Ctx, conv_id: str) -> Response:
    ctx.board.set_is_typing(_connected(_conversation(ctx, conv_id)))
    return empty()


def typing_participants(ctx: Ctx, conv_id: str) -> Response:
    conv = _conversation(ctx, conv_id)
    links: dict[str, Any] = {"self": render.link(conv.messaging_href + "/typingParticipants")}
    if conv.remote_typing is not None:
        links["participant"] = [render.link(conv.remote_href, conv.peer_name)]
    return json_response({"_links": links, "rel": "typingParticipants"})


def stop_messaging(ctx: Ctx, conv_id: str) -> Response:
    ctx.board.end_conversation(_conversation(ctx, conv_id))
    return empty()


def add_messaging(ctx: Ctx, conv_id: str) -> Response:
    conv = _conversation(ctx, conv_id)
    if conv.messaging_state != "Disconnected":
        raise conflict(f"Messaging is already {conv.messaging_state}.", "AlreadyExists")
    values = ctx.input()
    operation_id = optional_text(values, "operationId", 50)
    first = _first_message(ctx, values)
    inv = ctx.board.add_messaging(conv, operation_id, first)
    return empty(201, {"Location": inv.href})


def list_participants(ctx: Ctx, conv_id: str) -> Response:
    conv = _conversation(ctx, conv_id)
    links: dict[str, Any] = {
        "self": render.link(conv.href + "/participants"),
        "localParticipant": render.link(conv.local_href, conv.app.account.name),
    }
    if conv.remote_joined:
        links["participant"] = [render.link(conv.remote_href, conv.peer_name)]
    return json_response({"_links": links, "rel": "participants"})


def _which(ctx: Ctx, conv: Conversation, who: str) -> bool:
    """True for the local participant, False for the remote one."""
    if who == sip_user(ctx.application.account.sip):
        return True
    if who == sip_user(conv.peer_sip) and conv.remote_joined:
        return False
    raise not_found("The participant is not in this conversation.")


def get_participant(ctx: Ctx, conv_id: str, who: str) -> Response:
    conv = _conversation(ctx, conv_id)
    return json_response(render.participant(conv, _which(ctx, conv, who)))


def get_participant_messaging(ctx: Ctx, conv_id: str, who: str) -> Response:
    conv = _conversation(ctx, conv_id)
    local = _which(ctx, conv, who)
    if conv.messaging_state != "Connected":
        raise not_found()
    return json_response(render.participant_messaging(conv, local))

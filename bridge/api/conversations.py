"""HTTP API over the conversation registry: list conversations, read one with its messages.

No auth here: the app registers ``blueprint`` behind its own ``before_request`` check (the read
scope) and calls ``init_app(app, registry, log, store)`` once. Errors are the API's RFC 9457
problems (``bridge.api.problems``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from flask import Blueprint, Flask, Response, current_app, jsonify, request

from bridge.api.problems import (
    CONVERSATION_NOT_FOUND,
    CONVERSATION_NOT_LIVE,
    VALIDATION,
    FieldError,
    Problem,
    invalid,
)
from bridge.outbound.conversation_actions import Action, NotLive, enqueue
from bridge.outbound.messages import MessageNotFound, MessageStore
from bridge.session.conversations import (
    CONVERSATION_ID,
    LOG_CAP,
    Conversation,
    ConversationLog,
    ConversationRegistry,
)

blueprint = Blueprint("conversations", __name__)
EXTENSION_KEY = "ucwa_bridge.conversations"
MAX_LIMIT = 100
STATES = ("all", "active")
QUERY = frozenset({"remote", "state", "limit", "cursor"})


@dataclass(frozen=True)
class ConversationViews:
    client: redis.Redis
    registry: ConversationRegistry
    log: ConversationLog
    store: MessageStore
    # One registry per configured account, for ``remote``: each account has its own latest
    # conversation with a person. Empty: the registry above alone.
    account_registries: tuple[ConversationRegistry, ...] = ()

    def by_remote(self, remote: str) -> Conversation | None:
        """The latest conversation with ``remote`` of any account."""
        found = [r.by_remote(remote) for r in self.account_registries or (self.registry,)]
        live = [conv for conv in found if conv is not None]
        return max(live, key=lambda conv: conv.created_at, default=None)


def init_app(app: Flask, views: ConversationViews) -> None:
    app.extensions[EXTENSION_KEY] = views


def _views() -> ConversationViews:
    views: ConversationViews = current_app.extensions[EXTENSION_KEY]
    return views


def encode_cursor(position: tuple[float, str]) -> str:
    return f"{position[0]!r}~{position[1]}"


def decode_cursor(raw: str) -> tuple[float, str]:
    """(start time, id) from ``encode_cursor``; ValueError for anything else."""
    started, _, cid = raw.partition("~")
    if not CONVERSATION_ID.fullmatch(cid) or not started.isascii():
        raise ValueError(raw)
    value = float(started)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(raw)
    return value, cid


@blueprint.get("/conversations")
def list_conversations() -> Response:
    args = request.args
    unknown = sorted(set(args) - QUERY)
    if unknown:
        raise Problem(
            VALIDATION,
            f"{len(unknown)} unknown query parameter(s)",
            errors=[FieldError(n, "unknown parameter", "unknown_field") for n in unknown[:20]],
        )
    state = args.get("state") or "all"
    if state not in STATES:
        raise invalid("state", "one of " + ", ".join(STATES))
    raw_limit = args.get("limit", "50")
    if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise invalid("limit", f"an integer from 1 to {MAX_LIMIT}")
    cursor = None
    if args.get("cursor"):
        try:
            cursor = decode_cursor(args["cursor"])
        except ValueError:
            raise invalid("cursor", "not a cursor returned by this API") from None
    views = _views()
    remote = (args.get("remote") or "").strip()
    if remote:
        # The registry keeps one conversation per person: the latest.
        conv = views.by_remote(remote)
        matches = conv is not None and (state == "all" or conv.alive) and cursor is None
        items = [conv.api_view()] if matches and conv is not None else []
        return jsonify({"items": items, "next_cursor": None})
    found, after = views.registry.page(int(raw_limit), cursor, active_only=state == "active")
    return jsonify(
        {
            "items": [conv.api_view() for conv in found],
            "next_cursor": encode_cursor(after) if after else None,
        }
    )


@blueprint.get("/conversations/<conversation_id>")
def get_conversation(conversation_id: str) -> Response:
    views = _views()
    conv = views.registry.get(conversation_id)
    if conv is None:
        raise Problem(CONVERSATION_NOT_FOUND, "no conversation has this id (or it has expired)")
    return jsonify(_detail(views, conv))


@blueprint.post("/conversations/<conversation_id>/end")
def end_conversation(conversation_id: str) -> tuple[Response, int]:
    return _act(conversation_id, Action.END)


@blueprint.post("/conversations/<conversation_id>/typing")
def show_typing(conversation_id: str) -> tuple[Response, int]:
    return _act(conversation_id, Action.TYPING)


def _act(conversation_id: str, action: Action) -> tuple[Response, int]:
    """Queue ``action`` for a worker: 202, or 409 if the conversation is not live now."""
    views = _views()
    conv = views.registry.get(conversation_id)
    if conv is None:
        raise Problem(CONVERSATION_NOT_FOUND, "no conversation has this id (or it has expired)")
    try:
        queued = enqueue(views.client, conv, action)
    except NotLive as exc:
        raise Problem(CONVERSATION_NOT_LIVE, f"cannot {action.value} it: {exc}") from None
    body = {"action": action.value, "job_id": queued.job_id, "conversation": conv.api_view()}
    return jsonify(body), 202


def _detail(views: ConversationViews, conv: Conversation) -> dict[str, Any]:
    messages = []
    for entry in views.log.entries(conv.id, LOG_CAP):
        if entry.get("direction") == "outbound":
            messages.append(_outbound(views.store, entry))
        else:
            messages.append(entry)
    return {**conv.api_view(), "messages": messages}


def _outbound(store: MessageStore, entry: dict[str, Any]) -> dict[str, Any]:
    """An outbound entry with what its record says now (status, text), if it is still kept."""
    shown: dict[str, Any] = {
        "direction": "outbound",
        "message_id": entry["message_id"],
        "at": entry.get("at"),
        "status": None,
        "text": None,
        "html": None,
        "error": None,
    }
    try:
        record = store.get(str(entry["message_id"]))
    except MessageNotFound:
        return shown
    view = record.public_view()
    shown.update(
        status=view.get("status"),
        text=view.get("text"),
        html=view.get("html"),
        error=view.get("error"),
    )
    return shown

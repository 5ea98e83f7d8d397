"""``GET /messages``: the accepted messages newest first, filtered and paged by cursor.

No auth here: the app registers ``blueprint`` behind its read-scope check and calls
``init_app(app, search)`` once. Errors are the API's RFC 9457 problems.
"""

from __future__ import annotations

import re

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from bridge.api.idempotency import VALID_KEY
from bridge.api.problems import VALIDATION, FieldError, Problem
from bridge.api.schemas import SIP_URI, parse_rfc3339
from bridge.outbound.broadcasts import BROADCAST_ID
from bridge.outbound.message_search import MessageQuery, MessageSearch
from bridge.outbound.messages import MessageStatus
from bridge.session.conversations import CONVERSATION_ID

blueprint = Blueprint("message_list", __name__)
EXTENSION_KEY = "ucwa_bridge.message_search"
MAX_LIMIT = 100
DEFAULT_LIMIT = 50
QUERY = frozenset(
    {
        "status",
        "to",
        "conversation",
        "broadcast",
        "since",
        "until",
        "idempotency_key",
        "limit",
        "cursor",
    }
)
CURSOR = re.compile(r"^[0-9]{15}:msg_[0-9a-f]{32}$")
STATUSES = tuple(s.value for s in MessageStatus)


def init_app(app: Flask, search: MessageSearch) -> None:
    app.extensions[EXTENSION_KEY] = search


def parse_query() -> tuple[MessageQuery, int, str | None]:
    """The filters, limit and cursor of the request; a problem naming every bad parameter."""
    args = request.args
    unknown = sorted(set(args) - QUERY)
    errors = [FieldError(n, "unknown parameter", "unknown_field") for n in unknown[:20]]
    statuses: set[MessageStatus] = set()
    for raw in args.getlist("status"):
        for value in raw.split(","):
            if value not in STATUSES:
                errors.append(FieldError("status", "one of " + ", ".join(STATUSES), "invalid"))
                break
            statuses.add(MessageStatus(value))
    to = args.get("to")
    if to is not None and not SIP_URI.fullmatch(to):
        errors.append(FieldError("to", "a SIP URI like sip:user@domain", "invalid"))
    conversation = args.get("conversation")
    if conversation is not None and not CONVERSATION_ID.fullmatch(conversation):
        errors.append(FieldError("conversation", "a conversation id (conv_…)", "invalid"))
    broadcast = args.get("broadcast")
    if broadcast is not None and not BROADCAST_ID.fullmatch(broadcast):
        errors.append(FieldError("broadcast", "a broadcast id (bc_…)", "invalid"))
    key = args.get("idempotency_key")
    if key is not None and not VALID_KEY.fullmatch(key):
        errors.append(FieldError("idempotency_key", "1 to 255 visible ASCII characters", "invalid"))
    moments: dict[str, float | None] = {}
    for name in ("since", "until"):
        raw_time = args.get(name)
        try:
            moments[name] = None if raw_time is None else parse_rfc3339(raw_time)
        except ValueError:
            errors.append(FieldError(name, "an RFC 3339 date-time with an offset", "invalid"))
    raw_limit = args.get("limit", str(DEFAULT_LIMIT))
    if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= MAX_LIMIT:
        errors.append(FieldError("limit", f"an integer from 1 to {MAX_LIMIT}", "invalid"))
    cursor = args.get("cursor") or None
    if cursor is not None and not CURSOR.fullmatch(cursor):
        errors.append(FieldError("cursor", "not a cursor returned by this API", "invalid"))
    if errors:
        first = errors[0]
        detail = (
            f"{first.field}: {first.message}"
            if len(errors) == 1
            else (f"{len(errors)} invalid query parameters")
        )
        raise Problem(VALIDATION, detail, errors=errors[:20])
    query = MessageQuery(
        statuses=frozenset(statuses),
        to=to,
        conversation=conversation,
        idempotency_key=key,
        broadcast=broadcast,
        since=moments.get("since"),
        until=moments.get("until"),
    )
    return query, int(raw_limit), cursor


@blueprint.get("/messages")
def list_messages() -> Response:
    query, limit, cursor = parse_query()
    search: MessageSearch = current_app.extensions[EXTENSION_KEY]
    page = search.page(query, limit, cursor)
    return jsonify(
        {
            "items": [record.public_view() for record in page.records],
            "next_cursor": page.next_cursor,
        }
    )

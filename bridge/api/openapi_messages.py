"""The ``GET /messages`` operation of the OpenAPI document and the schema of its page.

Parameters are typed as the blueprint (``bridge.api.message_list``) checks them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bridge.api.idempotency import VALID_KEY
from bridge.api.message_list import CURSOR, DEFAULT_LIMIT, MAX_LIMIT, STATUSES
from bridge.api.schemas import SIP_URI
from bridge.outbound.broadcasts import BROADCAST_ID
from bridge.session.conversations import CONVERSATION_ID

Responses = Callable[..., dict[str, Any]]


def message_page_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/Message"}},
            "next_cursor": {
                "type": ["string", "null"],
                "description": "Pass as cursor for the next (older) page; null on the last.",
            },
        },
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def list_messages_operation(problems: Responses) -> dict[str, Any]:
    time = {"type": "string", "format": "date-time"}
    return {
        "operationId": "listMessages",
        "summary": "Accepted messages, newest first",
        "description": "Messages of the retention period (BRIDGE_RECORD_TTL_S), newest "
        "accepted first, read through indexes that expire with the records: the cost of a "
        "page does not grow with the number of messages stored. Filters combine (AND). The "
        "cursor is a position, so messages accepted while you page never shift a page; a "
        "message whose status changes meanwhile may show on a page of its new status or not. "
        "A page can hold fewer than limit and still have a next_cursor when the filters "
        "matched few of the messages one request looks at.",
        "tags": ["messages"],
        "security": [{"apiKey": []}],
        "parameters": [
            {
                **_query(
                    "status",
                    {"type": "array", "items": {"type": "string", "enum": list(STATUSES)}},
                    "Repeatable (status=failed&status=expired), or comma-separated.",
                ),
                "style": "form",
                "explode": True,
            },
            _query(
                "to",
                {"type": "string", "pattern": SIP_URI.pattern},
                "Messages to this person (case-insensitive), also replies sent into a "
                "conversation with them.",
            ),
            _query(
                "conversation",
                {"type": "string", "pattern": CONVERSATION_ID.pattern},
                "Messages that went out on this conversation.",
            ),
            _query(
                "broadcast",
                {"type": "string", "pattern": BROADCAST_ID.pattern},
                "Messages of this broadcast (POST /broadcasts).",
            ),
            _query("since", time, "Accepted at or after this time (RFC 3339)."),
            _query("until", time, "Accepted before this time (RFC 3339)."),
            _query(
                "idempotency_key",
                {"type": "string", "pattern": VALID_KEY.pattern},
                "The message accepted with this Idempotency-Key (of any API key).",
            ),
            _query(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
                "Largest page size.",
            ),
            _query(
                "cursor",
                {"type": "string", "pattern": f"^({CURSOR.pattern[1:-1]})?$"},
                "next_cursor of the previous page.",
            ),
        ],
        "responses": {
            "200": {
                "description": "A page of messages.",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/MessagePage"}}
                },
            },
            **problems({"422": "An invalid or unknown query parameter (errors names each)."}),
        },
    }

"""The broadcast operations of the OpenAPI document and the schema of their answer.

The request schema (``SendBroadcastRequest``) is built with the message's, in
``bridge.api.openapi``; this module only refers to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bridge.api.idempotency import VALID_KEY
from bridge.outbound.broadcasts import BROADCAST_ID, MAX_RECIPIENTS
from bridge.outbound.messages import MessageStatus

Responses = Callable[..., dict[str, Any]]
_REF = "#/components/schemas/"


def broadcast_schema() -> dict[str, Any]:
    time = {"type": "string", "format": "date-time"}
    return {
        "type": "object",
        "required": ["id", "created_at", "total", "counts", "messages"],
        "properties": {
            "id": {"type": "string", "pattern": BROADCAST_ID.pattern},
            "created_at": time,
            "send_at": time,
            "idempotency_key": {"type": "string"},
            "total": {"type": "integer", "minimum": 1, "maximum": MAX_RECIPIENTS},
            "counts": {
                "type": "object",
                "description": "Its messages per status now (every status, 0 included).",
                "required": [s.value for s in MessageStatus],
                "properties": {s.value: {"type": "integer", "minimum": 0} for s in MessageStatus},
                "additionalProperties": False,
            },
            "messages": {
                "type": "array",
                "description": "One per recipient, in the order given (repeats dropped).",
                "items": {
                    "type": "object",
                    "required": ["to", "id"],
                    "properties": {
                        "to": {"type": "string"},
                        "id": {"type": "string", "pattern": "^msg_[0-9a-f]{32}$"},
                    },
                },
            },
        },
    }


def broadcast_paths(problems: Responses) -> dict[str, Any]:
    answer = {"application/json": {"schema": {"$ref": _REF + "Broadcast"}}}
    return {
        "/broadcasts": {
            "post": {
                "operationId": "sendBroadcast",
                "summary": "One message to up to 500 people, stored all together or not at all",
                "description": "Each recipient gets a message of its own (GET /messages/{id}), "
                "in that person's line with the others to them; their status events carry the "
                "broadcast id. Against the key's rate limit a broadcast counts as its number "
                "of recipients: it goes when the allowance holds that many (or the whole burst, "
                "for a larger one) and then spends them all.",
                "tags": ["broadcasts"],
                "security": [{"apiKey": []}],
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "pattern": VALID_KEY.pattern},
                        "description": "Repeats within 24 h return the first response (per "
                        "API key); every message of the broadcast carries the key too.",
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": _REF + "SendBroadcastRequest"}}
                    },
                },
                "responses": {
                    "202": {
                        "description": "Stored and queued (or scheduled). Replays carry "
                        "Idempotency-Replayed: true.",
                        "headers": {
                            "Location": {
                                "required": True,
                                "schema": {"type": "string", "pattern": "^/broadcasts/bc_"},
                            },
                            "Idempotency-Replayed": {
                                "schema": {"type": "string", "enum": ["true"]}
                            },
                        },
                        "content": answer,
                    },
                    **problems(
                        {
                            "400": "Malformed JSON, a body that ended early, or an invalid "
                            "Idempotency-Key.",
                            "409": "A request with this Idempotency-Key is still in progress.",
                            "413": "Body over BRIDGE_MAX_BODY_BYTES plus room for 500 "
                            "recipients, or a text over BRIDGE_MAX_MESSAGE_CHARS.",
                            "415": "Content-Type is not application/json.",
                            "422": "Validation failed (errors names each field: to.3 for the "
                            "fourth recipient), or the Idempotency-Key was used with a "
                            "different body.",
                        }
                    ),
                },
            }
        },
        "/broadcasts/{broadcast_id}": {
            "get": {
                "operationId": "getBroadcast",
                "summary": "A broadcast, its messages and their counts per status",
                "tags": ["broadcasts"],
                "security": [{"apiKey": []}],
                "parameters": [
                    {
                        "name": "broadcast_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": {"description": "The broadcast.", "content": answer},
                    **problems({"404": "No broadcast with this id (or it has expired)."}),
                },
            }
        },
    }

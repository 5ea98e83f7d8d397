"""The conversation operations of the OpenAPI document and the schemas of their answers.

Parameters are typed as the blueprint (``bridge.api.conversations``) checks them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bridge.api.conversations import MAX_LIMIT, STATES

Responses = Callable[..., dict[str, Any]]
_NULLABLE_STRING = {"type": ["string", "null"]}
_TIME = {"type": ["string", "null"], "format": "date-time"}


def conversation_schemas() -> dict[str, Any]:
    conversation = {
        "type": "object",
        "required": ["id", "remote", "state", "messaging", "active", "started_at"],
        "properties": {
            "id": {"type": "string", "pattern": "^conv_[0-9a-f]{24}$"},
            "remote": {**_NULLABLE_STRING, "description": "The other person's SIP URI."},
            "remote_name": _NULLABLE_STRING,
            "direction": {"type": "string", "description": "Incoming or Outgoing (UCWA)."},
            "state": {"type": "string", "description": "UCWA conversation state."},
            "messaging": {"type": "string", "description": "UCWA messaging state."},
            "thread_id": _NULLABLE_STRING,
            "subject": _NULLABLE_STRING,
            "active": {"type": "boolean", "description": "Still live on the UCWA server."},
            "started_at": _TIME,
            "last_activity_at": _TIME,
            "account": {
                "type": "string",
                "description": "The id of the account whose application holds it.",
            },
        },
    }
    entry = {
        "type": "object",
        "required": ["direction", "message_id", "at"],
        "properties": {
            "direction": {"type": "string", "enum": ["inbound", "outbound"]},
            "message_id": {"type": "string"},
            "at": _TIME,
            "text": _NULLABLE_STRING,
            "html": _NULLABLE_STRING,
            "from": {
                "type": "object",
                "description": "inbound: who sent it.",
                "properties": {"uri": _NULLABLE_STRING, "name": _NULLABLE_STRING},
            },
            "status": {
                **_NULLABLE_STRING,
                "description": "outbound: the message's status now (null once its record "
                "has expired).",
            },
            "error": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/MessageError"}]},
        },
    }
    return {
        "Conversation": conversation,
        "ConversationEntry": entry,
        "ConversationDetail": {
            "allOf": [
                {"$ref": "#/components/schemas/Conversation"},
                {
                    "type": "object",
                    "required": ["messages"],
                    "properties": {
                        "messages": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/ConversationEntry"},
                        }
                    },
                },
            ]
        },
        "ConversationAction": {
            "type": "object",
            "required": ["action", "job_id", "conversation"],
            "properties": {
                "action": {"type": "string", "enum": ["end", "typing"]},
                "job_id": {"type": "string", "description": "The worker job that will do it."},
                "conversation": {"$ref": "#/components/schemas/Conversation"},
            },
        },
        "ConversationPage": {
            "type": "object",
            "required": ["items", "next_cursor"],
            "properties": {
                "items": {"type": "array", "items": {"$ref": "#/components/schemas/Conversation"}},
                "next_cursor": _NULLABLE_STRING,
            },
        },
    }


def conversation_paths(problems: Responses) -> dict[str, Any]:
    """``problems(extra)`` gives the error responses of an authenticated operation."""
    return {
        "/conversations": {
            "get": {
                "operationId": "listConversations",
                "summary": "Conversations of the retention period, newest started first",
                "tags": ["conversations"],
                "security": [{"apiKey": []}],
                "parameters": [
                    {
                        "name": "remote",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": "The latest conversation with this SIP URI.",
                    },
                    {
                        "name": "state",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["", *STATES], "default": "all"},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_LIMIT,
                            "default": 50,
                        },
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "required": False,
                        "schema": {
                            "type": "string",
                            "pattern": "^([0-9]{1,15}(\\.[0-9]{1,17})?~conv_[0-9a-f]{24})?$",
                        },
                        "description": "next_cursor of the previous page.",
                    },
                ],
                "responses": {
                    "200": {
                        "description": "A page of conversations; a page can hold fewer than "
                        "limit and still have a next_cursor (state=active).",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/ConversationPage"}
                            }
                        },
                    },
                    **problems({"422": "An invalid or unknown query parameter (errors names it)."}),
                },
            }
        },
        "/conversations/{conversation_id}": {
            "get": {
                "operationId": "getConversation",
                "summary": "One conversation with its messages both ways",
                "tags": ["conversations"],
                "security": [{"apiKey": []}],
                "parameters": [
                    {
                        "name": "conversation_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The conversation and its messages, oldest first.",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/ConversationDetail"}
                            }
                        },
                    },
                    **problems({"404": "No such conversation (or past retention)."}),
                },
            }
        },
        "/conversations/{conversation_id}/end": {
            "post": _action(
                "endConversation",
                "End the conversation (UCWA stopMessaging), done by a worker",
                "Queued; the conversation's state turns Disconnected once UCWA reports it.",
                problems,
            )
        },
        "/conversations/{conversation_id}/typing": {
            "post": _action(
                "showTyping",
                "Show the bot as typing in the conversation (UCWA setIsTyping)",
                "Queued; dropped if no worker starts it within 10 s.",
                problems,
            )
        },
    }


def _action(operation_id: str, summary: str, ok: str, problems: Responses) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "summary": summary,
        "tags": ["conversations"],
        "security": [{"apiKey": []}],
        "parameters": [
            {
                "name": "conversation_id",
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
            }
        ],
        "responses": {
            "202": {
                "description": ok,
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/ConversationAction"}
                    }
                },
            },
            **problems(
                {
                    "404": "No such conversation (or past retention).",
                    "409": "The conversation is not live now (ended, or no messaging).",
                }
            ),
        },
    }

"""The OpenAPI 3.1 document served at ``/openapi.json``.

The request schema comes from the pydantic model; responses and problems are written here.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from bridge.api.broadcast_request import SendBroadcastRequest
from bridge.api.gunicorn_worker import GUNICORN_PROBLEM_TYPES
from bridge.api.idempotency import VALID_KEY
from bridge.api.models import MODELS as ANSWER_MODELS
from bridge.api.openapi_broadcasts import broadcast_paths, broadcast_schema
from bridge.api.openapi_conversations import conversation_paths, conversation_schemas
from bridge.api.openapi_messages import list_messages_operation, message_page_schema
from bridge.api.openapi_webhooks import webhook_paths
from bridge.api.problems import ALL_TYPES, PROBLEM_MEDIA_TYPE, ProblemType
from bridge.api.rate_limit import RATE_LIMITED
from bridge.api.schemas import (
    BODY_FIELDS,
    CONVERSATION_ID,
    MAX_URI_CHARS,
    MESSAGE_TEXT,
    SIP_URI,
    CancelMessageRequest,
    SendMessageRequest,
)
from bridge.outbound.messages import MessageStatus
from bridge.webhooks.events import EventType
from bridge.webhooks.payloads import DATA_MODELS, DESCRIPTIONS, envelope_schema

# Problems the API answers beyond the shared catalogue: the rate limiter's and gunicorn's.
API_PROBLEM_TYPES: tuple[ProblemType, ...] = (
    *ALL_TYPES,
    RATE_LIMITED,
    *GUNICORN_PROBLEM_TYPES,
)
_REF = "#/components/schemas/"
JSON = "application/json"
_STRING = {"schema": {"type": "string"}}
# draft-ietf-httpapi-ratelimit-headers-09: sent with every answer to an authenticated request.
RATE_LIMIT_HEADERS = {
    "RateLimit-Policy": {
        **_STRING,
        "description": 'The per-key quota, e.g. "per-key";q=100;w=10 (q requests per w s).',
    },
    "RateLimit": {
        **_STRING,
        "description": 'What is left of it, e.g. "per-key";r=42;t=6 (r requests, full in t s).',
    },
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _problem(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": _ref("Problem")}},
    }
    if headers:
        response["headers"] = headers
    return response


def request_schema(max_message_chars: int) -> dict[str, Any]:
    """The pydantic schema with its limits and patterns; null means absent."""
    schema = body_schema(SendMessageRequest, max_message_chars)
    props = schema["properties"]
    props["to"]["pattern"] = SIP_URI.pattern
    props["to"]["maxLength"] = MAX_URI_CHARS
    props["conversation"]["pattern"] = CONVERSATION_ID.pattern
    schema["allOf"] = [exactly_one("to", "conversation"), exactly_one(*BODY_FIELDS)]
    return schema


def broadcast_request_schema(max_message_chars: int) -> dict[str, Any]:
    schema = body_schema(SendBroadcastRequest, max_message_chars)
    schema["properties"]["to"]["items"].update(pattern=SIP_URI.pattern, maxLength=MAX_URI_CHARS)
    schema["allOf"] = [exactly_one(*BODY_FIELDS)]
    return schema


def body_schema(model: type[BaseModel], max_message_chars: int) -> dict[str, Any]:
    """The schema of a model with a message body: nullable fields, the text patterns and
    limits the validators apply."""
    schema = model.model_json_schema()
    for prop in schema["properties"].values():
        branches = prop.pop("anyOf", [])
        kept = [b for b in branches if b.get("type") != "null"]
        if kept:
            prop.update(kept[0])
            prop["type"] = [prop["type"], "null"]
        if prop.get("default", "") is None:
            del prop["default"]
    props = schema["properties"]
    for name in (*BODY_FIELDS, "subject"):
        props[name]["pattern"] = MESSAGE_TEXT.pattern
    for name in BODY_FIELDS:
        props[name]["maxLength"] = max_message_chars
    return schema


def exactly_one(*names: str) -> dict[str, Any]:
    return {
        "oneOf": [{"required": [name], "properties": {name: {"type": "string"}}} for name in names]
    }


def _message_schema() -> dict[str, Any]:
    time = {"type": "string", "format": "date-time"}
    nullable_string = {"type": ["string", "null"]}
    return {
        "type": "object",
        "required": [
            "id",
            "status",
            "to",
            "conversation",
            "subject",
            "importance",
            "validity",
            "created_at",
            "expires_at",
            "history",
            "attempts",
            "error",
        ],
        "properties": {
            "id": {"type": "string", "pattern": "^msg_[0-9a-f]{32}$"},
            "status": {"type": "string", "enum": [s.value for s in MessageStatus]},
            "to": nullable_string,
            "conversation": nullable_string,
            "text": {"type": "string"},
            "html": {"type": "string"},
            "subject": nullable_string,
            "importance": {"type": "string", "enum": ["Normal", "Urgent"]},
            "validity": {"type": "integer", "description": "Seconds the message stays valid."},
            "created_at": time,
            "expires_at": time,
            "history": {
                "type": "object",
                "description": "When the message entered each status, in order.",
                "propertyNames": {"enum": [s.value for s in MessageStatus]},
                "additionalProperties": time,
            },
            "attempts": {"type": "integer", "minimum": 0},
            "error": {"oneOf": [{"type": "null"}, _ref("MessageError")]},
            "idempotency_key": {
                "type": "string",
                "description": "The Idempotency-Key the message was sent with, if any.",
            },
            "broadcast": {
                "type": "string",
                "description": "The broadcast that created it (POST /broadcasts), if any.",
            },
            "from": {
                "type": "string",
                "description": "The id of the account it is sent as (default when the "
                "deployment has one account).",
            },
            "send_at": {
                **time,
                "description": "When the caller asked it to be sent; status scheduled until then.",
            },
            "previous_error": {
                **_ref("MessageError"),
                "description": "Present when UCWA reported the delivery after the message had "
                "failed with outcome_unknown: the error the delivery replaced.",
            },
        },
    }


def _components(max_message_chars: int) -> dict[str, Any]:
    return {
        "schemas": {
            "SendMessageRequest": request_schema(max_message_chars),
            "Message": _message_schema(),
            "MessagePage": message_page_schema(),
            "SendBroadcastRequest": broadcast_request_schema(max_message_chars),
            "Broadcast": broadcast_schema(),
            "MessageError": {
                "type": "object",
                "required": ["code", "message", "ucwa"],
                "properties": {
                    "code": {"type": "string", "description": "Stable bridge error code."},
                    "message": {"type": "string"},
                    "ucwa": {
                        "type": ["object", "null"],
                        "properties": {
                            "code": {"type": ["string", "null"]},
                            "subcode": {"type": ["string", "null"]},
                            "message": {"type": ["string", "null"]},
                            "diagnostics": {
                                "type": ["string", "null"],
                                "description": "The server's X-Ms-diagnostics header, if any.",
                            },
                        },
                    },
                },
            },
            "Problem": {
                "type": "object",
                "required": ["type", "title", "status", "detail"],
                "properties": {
                    # Open: a newer server may answer a type this document does not list yet.
                    "type": {
                        "type": "string",
                        "format": "uri",
                        "description": "A stable problem type URI. Known types: "
                        + ", ".join(t.uri for t in API_PROBLEM_TYPES),
                        "examples": [t.uri for t in API_PROBLEM_TYPES],
                    },
                    "title": {"type": "string"},
                    "status": {"type": "integer"},
                    "detail": {"type": "string"},
                    "instance": {"type": "string"},
                    "message_status": {
                        "type": "string",
                        "enum": [s.value for s in MessageStatus],
                        "description": "With message-not-cancellable: the message's status.",
                    },
                    "errors": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["field", "message", "code"],
                            "properties": {
                                "field": {"type": "string"},
                                "message": {"type": "string"},
                                "code": {"type": "string"},
                            },
                        },
                    },
                },
            },
            **conversation_schemas(),
            "Health": {
                "type": "object",
                "required": ["status"],
                "properties": {
                    "status": {"type": "string"},
                    "reasons": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
        "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        "responses": {
            "Unauthorized": _problem(
                "Missing or unknown API key.",
                {"WWW-Authenticate": {"schema": {"type": "string"}}},
            ),
            "Forbidden": _problem(
                "The API key lacks the scope for this operation, or (sending) may not send from "
                "the account named in from, or that account is not configured (errors names "
                "from)."
            ),
            "MethodNotAllowed": _problem(
                "Method not allowed.", {"Allow": {"schema": {"type": "string"}}}
            ),
            "Unavailable": _problem(
                "Redis is unreachable; retry later.",
                {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
            ),
            "Internal": _problem("Unexpected error; no details are disclosed."),
            "RateLimited": _problem(
                "The API key's rate limit is reached (errors names Authorization).",
                {
                    "Retry-After": {
                        "required": True,
                        "schema": {"type": "integer", "minimum": 1},
                        "description": "Seconds until the next request is allowed.",
                    },
                    **RATE_LIMIT_HEADERS,
                },
            ),
            "RequestLineTooLong": _problem(
                "The request line is over BRIDGE_API_LIMIT_REQUEST_LINE (answered by gunicorn)."
            ),
            "HeadersTooLarge": _problem(
                "More header fields than BRIDGE_API_LIMIT_REQUEST_FIELDS, or one over "
                "BRIDGE_API_LIMIT_REQUEST_FIELD_SIZE (answered by gunicorn)."
            ),
        },
    }


_CODES = {
    "Unauthorized": "401",
    "Forbidden": "403",
    "MethodNotAllowed": "405",
    "RequestLineTooLong": "414",
    "RateLimited": "429",
    "HeadersTooLarge": "431",
    "Internal": "500",
    "Unavailable": "503",
}
# Every operation can meet gunicorn's limits, an unexpected error and a wrong method.
_ANY = ("MethodNotAllowed", "RequestLineTooLong", "HeadersTooLarge", "Internal")
# Operations behind an API key also meet authentication, scopes, the rate limit and Redis.
_AUTHENTICATED = (*_ANY, "Unauthorized", "Forbidden", "RateLimited", "Unavailable")


def _common(*names: str) -> dict[str, Any]:
    return {_CODES[n]: {"$ref": f"#/components/responses/{n}"} for n in names}


def _with_rate_limit(headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return {**(headers or {}), **RATE_LIMIT_HEADERS}


def _authenticated(extra: dict[str, Any]) -> dict[str, Any]:
    """Error responses of an operation behind an API key; ``extra`` maps codes to problems
    (a description is made a problem response)."""
    own = {
        code: _problem(value) if isinstance(value, str) else value for code, value in extra.items()
    }
    return {**own, **_common(*_AUTHENTICATED)}


def _post_messages() -> dict[str, Any]:
    location = {
        "Location": {
            "required": True,
            "schema": {"type": "string", "pattern": "^/messages/msg_[0-9a-f]{32}$"},
        }
    }
    return {
        "operationId": "sendMessage",
        "tags": ["messages"],
        "summary": "Accept a message for delivery",
        "description": "HTML is sanitised to what Skype for Business renders before it is "
        "stored; markdown is rendered to HTML (raw HTML in it shows as text) and sanitised the "
        "same way. The answer shows what will be sent.",
        "security": [{"apiKey": []}],
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "pattern": VALID_KEY.pattern},
                "description": "Repeats within 24 h return the first response (per API key).",
            }
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref("SendMessageRequest")}},
        },
        "responses": {
            "202": {
                "description": "Stored and queued. Replays carry Idempotency-Replayed: true.",
                "headers": _with_rate_limit(
                    {
                        **location,
                        "Idempotency-Replayed": {"schema": {"type": "string", "enum": ["true"]}},
                    }
                ),
                "content": {"application/json": {"schema": _ref("Message")}},
            },
            **_authenticated(
                {
                    "400": "Malformed, too deeply nested or non-UTF-8 JSON, a body that is "
                    "malformed or ended early, or an invalid Idempotency-Key.",
                    "409": _problem(
                        "A request with this Idempotency-Key is still in progress.",
                        {"Retry-After": {"schema": {"type": "integer"}}},
                    ),
                    "413": "Body over BRIDGE_MAX_BODY_BYTES, or text/html/markdown over "
                    "BRIDGE_MAX_MESSAGE_CHARS (errors names the field).",
                    "415": _problem(
                        "Content-Type is not application/json.",
                        {"Accept-Post": {"schema": {"type": "string"}}},
                    ),
                    "422": "Validation failed (errors names each field, at most 20): also an "
                    "unpaired surrogate in any string, a key given twice, a control character "
                    "in text, html, markdown or subject (invalid_characters, with its "
                    "position), HTML over the limit once sanitised (errors names html or "
                    "markdown); or the Idempotency-Key was used with a "
                    "different body.",
                }
            ),
        },
    }


def _get_message() -> dict[str, Any]:
    return {
        "operationId": "getMessage",
        "tags": ["messages"],
        "summary": "Status of an accepted message",
        "security": [{"apiKey": []}],
        "parameters": [
            {"name": "message_id", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "responses": {
            "200": {
                "description": "The message record.",
                "headers": _with_rate_limit(),
                "content": {"application/json": {"schema": _ref("Message")}},
            },
            **_authenticated({"404": "No message with this id."}),
        },
    }


def _cancel_message() -> dict[str, Any]:
    reason = CancelMessageRequest.model_json_schema()
    reason["properties"]["reason"] = {
        "type": "string",
        "maxLength": reason["properties"]["reason"]["anyOf"][0]["maxLength"],
        "pattern": MESSAGE_TEXT.pattern,
        "description": reason["properties"]["reason"]["description"],
    }
    return {
        "operationId": "cancelMessage",
        "summary": "Cancel a message not yet handed to UCWA",
        "description": "A message that is queued, or waiting between attempts, ends cancelled "
        "(error.code cancelled_by_caller, error.message the reason), a message.cancelled event "
        "goes to the webhooks, and the next message to that person starts. It is never posted "
        "to UCWA afterwards: the cancel and the worker's claim to post are one compare-and-set. "
        "Cancelling a cancelled message answers the record again.",
        "tags": ["messages"],
        "security": [{"apiKey": []}],
        "parameters": [
            {"name": "message_id", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": reason}},
        },
        "responses": {
            "200": {
                "description": "Cancelled (now or before): the message record.",
                "headers": _with_rate_limit(),
                "content": {"application/json": {"schema": _ref("Message")}},
            },
            **_authenticated(
                {
                    "400": "Malformed JSON (or not UTF-8), or a body that is malformed or "
                    "ended early.",
                    "404": "No message with this id.",
                    "409": "The message is already with UCWA (sending) or final "
                    "(delivered, failed, expired); message_status says which.",
                    "413": "Body over BRIDGE_MAX_BODY_BYTES.",
                    "415": "A body whose Content-Type is not application/json.",
                    "422": "Invalid body: a bad or unknown field, a key given twice.",
                }
            ),
        },
    }


def _unauthenticated(
    operation_id: str, summary: str, codes: dict[str, str], media_type: str
) -> dict[str, Any]:
    schema = _ref("Health") if media_type == "application/json" else {"type": "string"}
    return {
        "operationId": operation_id,
        "summary": summary,
        "tags": ["operations"],
        "security": [],
        "responses": {
            code: {"description": description, "content": {media_type: {"schema": schema}}}
            for code, description in codes.items()
        }
        | _common(*_ANY),
    }


def build_document(max_message_chars: int, version: str = "0.1.0") -> dict[str, Any]:
    """The full OpenAPI 3.1 document; problem types are listed in ``Problem.type``."""
    document_op = _unauthenticated(
        "getOpenApiDocument", "This document", {"200": "OpenAPI 3.1 document."}, JSON
    )
    document_op["responses"]["200"]["content"][JSON]["schema"] = {"type": "object"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ucwa-bridge",
            "version": version,
            "description": "Send Skype for Business instant messages with one HTTP call. "
            "Errors are RFC 9457 problem+json with a stable type URI. Requests with an API "
            "key are rate-limited per key and answered with RateLimit-Policy and RateLimit "
            "fields (draft-ietf-httpapi-ratelimit-headers-09).",
        },
        "security": [{"apiKey": []}],
        "paths": {
            "/messages": {
                "post": _post_messages(),
                "get": list_messages_operation(_authenticated),
            },
            "/messages/{message_id}": {"get": _get_message()},
            "/messages/{message_id}/cancel": {"post": _cancel_message()},
            **webhook_paths(_authenticated),
            **conversation_paths(_authenticated),
            **broadcast_paths(_authenticated),
            "/healthz": {
                "get": _unauthenticated("getHealth", "Process is up", {"200": "Up."}, JSON)
            },
            "/metrics": {
                "get": _unauthenticated(
                    "getMetrics",
                    "Prometheus metrics (text format)",
                    {"200": "Metrics."},
                    "text/plain",
                )
            },
            "/readyz": {
                "get": _unauthenticated(
                    "getReadiness",
                    "Ready to accept traffic",
                    {"200": "Ready.", "503": "Not ready."},
                    JSON,
                )
            },
            "/openapi.json": {"get": document_op},
        },
        "webhooks": _event_webhooks(),
        "components": _with_event_schemas(_components(max_message_chars)),
    }


def _event_name(event_type: EventType) -> str:
    """``message.received`` → ``MessageReceivedEvent``."""
    return "".join(part.capitalize() for part in event_type.value.split(".")) + "Event"


def _with_event_schemas(components: dict[str, Any]) -> dict[str, Any]:
    """The event bodies' schemas, from the pydantic models the tests check every event with."""
    models = sorted(set(DATA_MODELS.values()), key=lambda m: m.__name__)
    _, top = models_json_schema(
        [(model, "serialization") for model in models], ref_template=_REF + "{model}"
    )
    schemas = components["schemas"]
    schemas.update(top.get("$defs", {}))
    _, answers = models_json_schema(
        [(model, "serialization") for model in ANSWER_MODELS], ref_template=_REF + "{model}"
    )
    schemas.update(answers.get("$defs", {}))
    for event_type, model in DATA_MODELS.items():
        schemas[_event_name(event_type)] = envelope_schema(event_type, _REF + model.__name__)
    return components


def _event_webhooks() -> dict[str, Any]:
    """OpenAPI 3.1 ``webhooks``: what the bridge POSTs to each endpoint, one entry per type."""
    signature_headers = {
        name: {"in": "header", "name": name, "required": True, "schema": {"type": "string"}}
        for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
    }
    return {
        event_type.value: {
            "post": {
                "operationId": "on" + _event_name(event_type).removesuffix("Event"),
                "summary": DESCRIPTIONS[event_type],
                "tags": ["webhook events"],
                "parameters": list(signature_headers.values()),
                "requestBody": {
                    "required": True,
                    "description": "Signed per Standard Webhooks (see the README).",
                    "content": {"application/json": {"schema": _ref(_event_name(event_type))}},
                },
                "responses": {
                    "2XX": {"description": "Received. Any other answer (or none) is retried."},
                    "410": {"description": "Gone: the endpoint is disabled, nothing more sent."},
                },
            }
        }
        for event_type in EventType
    }

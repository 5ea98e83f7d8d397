"""The OpenAPI 3.1 document served at ``/openapi.json``.

The request schema comes from the pydantic model; responses and problems are written here.
"""

from __future__ import annotations

from typing import Any

from bridge.api.schemas import CONVERSATION_ID, MAX_URI_CHARS, SendMessageRequest
from bridge.messages import MessageStatus
from bridge.problems import ALL_TYPES, PROBLEM_MEDIA_TYPE

_REF = "#/components/schemas/"


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
    """The pydantic schema, with nulls dropped (absent and null mean the same) and limits added."""
    schema = SendMessageRequest.model_json_schema()
    for prop in schema["properties"].values():
        branches = [b for b in prop.pop("anyOf", []) if b.get("type") != "null"]
        if branches:
            prop.update(branches[0])
        if prop.get("default", "") is None:
            del prop["default"]
    props = schema["properties"]
    props["to"]["pattern"] = "^sip:[^@\\s]+@[^@\\s]+$"
    props["to"]["maxLength"] = MAX_URI_CHARS
    props["conversation"]["pattern"] = CONVERSATION_ID.pattern
    for name in ("text", "html"):
        props[name]["maxLength"] = max_message_chars
        props[name]["minLength"] = 1
    schema["allOf"] = [
        {"oneOf": [{"required": ["to"]}, {"required": ["conversation"]}]},
        {"oneOf": [{"required": ["text"]}, {"required": ["html"]}]},
    ]
    return schema


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
        },
    }


def _components(max_message_chars: int) -> dict[str, Any]:
    return {
        "schemas": {
            "SendMessageRequest": request_schema(max_message_chars),
            "Message": _message_schema(),
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
                        },
                    },
                },
            },
            "Problem": {
                "type": "object",
                "required": ["type", "title", "status", "detail"],
                "properties": {
                    "type": {"type": "string", "enum": [t.uri for t in ALL_TYPES]},
                    "title": {"type": "string"},
                    "status": {"type": "integer"},
                    "detail": {"type": "string"},
                    "instance": {"type": "string"},
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
            "Forbidden": _problem("The API key lacks the scope for this operation."),
            "MethodNotAllowed": _problem(
                "Method not allowed.", {"Allow": {"schema": {"type": "string"}}}
            ),
            "Unavailable": _problem("Redis is unreachable; retry later."),
            "Internal": _problem("Unexpected error; no details are disclosed."),
        },
    }


def _common(*names: str) -> dict[str, Any]:
    codes = {
        "Unauthorized": "401",
        "Forbidden": "403",
        "MethodNotAllowed": "405",
        "Internal": "500",
        "Unavailable": "503",
    }
    return {codes[n]: {"$ref": f"#/components/responses/{n}"} for n in names}


def _post_messages() -> dict[str, Any]:
    location = {"Location": {"schema": {"type": "string"}, "description": "/messages/{id}"}}
    return {
        "operationId": "sendMessage",
        "summary": "Accept a message for delivery",
        "security": [{"apiKey": []}],
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
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
                "headers": {
                    **location,
                    "Idempotency-Replayed": {"schema": {"type": "string", "enum": ["true"]}},
                },
                "content": {"application/json": {"schema": _ref("Message")}},
            },
            "400": _problem("Malformed JSON or an invalid Idempotency-Key header."),
            "409": _problem(
                "A request with this Idempotency-Key is still in progress.",
                {"Retry-After": {"schema": {"type": "integer"}}},
            ),
            "413": _problem("Body over the size limit, or text/html over the message limit."),
            "415": _problem(
                "Content-Type is not application/json.",
                {"Accept-Post": {"schema": {"type": "string"}}},
            ),
            "422": _problem(
                "Validation failed (errors names each field), or the Idempotency-Key was "
                "used with a different body."
            ),
            **_common("Unauthorized", "Forbidden", "MethodNotAllowed", "Internal", "Unavailable"),
        },
    }


def _get_message() -> dict[str, Any]:
    return {
        "operationId": "getMessage",
        "summary": "Status of an accepted message",
        "security": [{"apiKey": []}],
        "parameters": [
            {"name": "message_id", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "responses": {
            "200": {
                "description": "The message record.",
                "content": {"application/json": {"schema": _ref("Message")}},
            },
            "404": _problem("No message with this id."),
            **_common("Unauthorized", "Forbidden", "MethodNotAllowed", "Internal", "Unavailable"),
        },
    }


def _webhook_op(
    operation_id: str,
    summary: str,
    ok: str,
    *,
    path_param: str | None = None,
    query: tuple[str, ...] = (),
    body: dict[str, Any] | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
        for name in query
    ]
    if path_param:
        parameters.append(
            {"name": path_param, "in": "path", "required": True, "schema": {"type": "string"}}
        )
    status = "202" if operation_id in ("retryDelivery", "replayDeliveries") else "200"
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "tags": ["webhooks"],
        "security": [{"apiKey": []}],
        "parameters": parameters,
        "responses": {
            status: {
                "description": ok,
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            **{code: _problem(text) for code, text in (extra or {}).items()},
            **_common("Unauthorized", "Forbidden", "MethodNotAllowed", "Internal", "Unavailable"),
        },
    }
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    return operation


def _webhook_paths() -> dict[str, Any]:
    """The delivery log, retry and replay API (see the README's Webhooks section)."""
    return {
        "/webhooks/deliveries": {
            "get": _webhook_op(
                "listDeliveries",
                "Webhook deliveries, newest first",
                "A page of deliveries and the cursor of the next page.",
                query=("status", "endpoint", "type", "limit", "cursor"),
                extra={"422": "Invalid filter."},
            )
        },
        "/webhooks/deliveries/{delivery_id}": {
            "get": _webhook_op(
                "getDelivery",
                "One delivery with all its attempts",
                "The delivery and its attempts (status, latency, response excerpt).",
                path_param="delivery_id",
                extra={"404": "No such delivery."},
            )
        },
        "/webhooks/deliveries/{delivery_id}/retry": {
            "post": _webhook_op(
                "retryDelivery",
                "Deliver again now",
                "Queued again.",
                path_param="delivery_id",
                extra={"404": "No such delivery.", "409": "An attempt is in flight."},
            )
        },
        "/webhooks/replay": {
            "post": _webhook_op(
                "replayDeliveries",
                "Deliver again every failed or dead delivery since a time",
                "How many deliveries were queued again.",
                body={
                    "type": "object",
                    "required": ["since"],
                    "additionalProperties": False,
                    "properties": {
                        "since": {"type": "string", "format": "date-time"},
                        "endpoint": {"type": "string"},
                    },
                },
                extra={"422": "Invalid body."},
            )
        },
        "/webhooks/endpoints": {
            "get": _webhook_op(
                "listEndpoints",
                "Configured webhook endpoints (never their secrets)",
                "Endpoints with their event types and whether they are enabled.",
            )
        },
        "/webhooks/endpoints/{endpoint_id}/enable": {
            "post": _webhook_op(
                "enableEndpoint",
                "Enable an endpoint disabled after a 410",
                "The endpoint.",
                path_param="endpoint_id",
                extra={"404": "No such endpoint."},
            )
        },
    }


def _probe(summary: str, codes: dict[str, str]) -> dict[str, Any]:
    return {
        "summary": summary,
        "security": [],
        "responses": {
            code: {
                "description": description,
                "content": {"application/json": {"schema": _ref("Health")}},
            }
            for code, description in codes.items()
        }
        | _common("MethodNotAllowed"),
    }


def build_document(max_message_chars: int, version: str = "0.1.0") -> dict[str, Any]:
    """The full OpenAPI 3.1 document; problem types are listed in ``Problem.type``."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ucwa-bridge",
            "version": version,
            "description": "Send Skype for Business instant messages with one HTTP call. "
            "Errors are RFC 9457 problem+json with a stable type URI.",
        },
        "security": [{"apiKey": []}],
        "paths": {
            "/messages": {"post": _post_messages()},
            "/messages/{message_id}": {"get": _get_message()},
            **_webhook_paths(),
            "/healthz": {"get": _probe("Process is up", {"200": "Up."})},
            "/metrics": {"get": _probe("Prometheus metrics (text format)", {"200": "Metrics."})},
            "/readyz": {
                "get": _probe("Ready to accept traffic", {"200": "Ready.", "503": "Not ready."})
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1 document.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        **_common("MethodNotAllowed"),
                    },
                }
            },
        },
        "components": _components(max_message_chars),
    }

"""The webhook operations of the OpenAPI document (delivery log, retry, replay, endpoints) and
its ``webhooks`` section: the events the bridge POSTs. Parameters are typed as the blueprint
(``bridge.api.webhooks``) checks them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bridge.api.webhooks import MAX_LIMIT
from bridge.webhooks.events import EventType
from bridge.webhooks.log import DeliveryStatus

Responses = Callable[..., dict[str, Any]]
# An empty filter or cursor means none, so "" is accepted beside the values.
_FILTERS: dict[str, dict[str, Any]] = {
    "status": {"type": "string", "enum": ["", *(s.value for s in DeliveryStatus)]},
    "endpoint": {"type": "string"},
    "type": {"type": "string", "enum": ["", *(t.value for t in EventType)]},
    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 50},
    "cursor": {
        "type": "string",
        "pattern": "^([0-9]{1,15}\\.dlv_[0-9a-f]{1,64})?$",
        "description": "next_cursor of the previous page.",
    },
}


# The answer model (``bridge.api.models``) of each operation.
ANSWERS = {
    "listDeliveries": "DeliveryPage",
    "getDelivery": "DeliveryDetail",
    "retryDelivery": "Delivery",
    "replayDeliveries": "ReplayResult",
    "listEndpoints": "EndpointList",
    "enableEndpoint": "Endpoint",
}


def _operation(
    operation_id: str,
    summary: str,
    ok: str,
    problems: Responses,
    *,
    status: str = "200",
    path_param: str | None = None,
    query: Sequence[str] = (),
    body: dict[str, Any] | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "query", "required": False, "schema": _FILTERS[name]} for name in query
    ]
    if path_param:
        parameters.append(
            {"name": path_param, "in": "path", "required": True, "schema": {"type": "string"}}
        )
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "tags": ["webhooks"],
        "security": [{"apiKey": []}],
        "parameters": parameters,
        "responses": {
            status: {
                "description": ok,
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/" + ANSWERS[operation_id]}
                    }
                },
            },
            **problems(extra or {}),
        },
    }
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    return operation


def _replay_body() -> dict[str, Any]:
    # Endpoint ids are plain strings: a document that listed this deployment's would make every
    # generated client deployment-specific. An unknown one is a 404.
    properties: dict[str, Any] = {
        "since": {"type": "string", "format": "date-time"},
        "endpoint": {
            "type": ["string", "null"],
            "description": "an endpoint id (GET /webhooks/endpoints); absent or null: all",
        },
    }
    return {
        "type": "object",
        "required": ["since"],
        "additionalProperties": False,
        "properties": properties,
    }


def webhook_paths(problems: Responses) -> dict[str, Any]:
    """``problems(extra)`` gives the error responses of an authenticated operation."""
    return {
        "/webhooks/deliveries": {
            "get": _operation(
                "listDeliveries",
                "Webhook deliveries, newest first",
                "A page of deliveries and the cursor of the next page.",
                problems,
                query=("status", "endpoint", "type", "limit", "cursor"),
                extra={"422": "Invalid filter, or a parameter that is not UTF-8."},
            )
        },
        "/webhooks/deliveries/{delivery_id}": {
            "get": _operation(
                "getDelivery",
                "One delivery with all its attempts",
                "The delivery and its attempts (status, latency, response excerpt).",
                problems,
                path_param="delivery_id",
                extra={"404": "No such delivery."},
            )
        },
        "/webhooks/deliveries/{delivery_id}/retry": {
            "post": _operation(
                "retryDelivery",
                "Deliver again now",
                "Queued again.",
                problems,
                status="202",
                path_param="delivery_id",
                extra={"404": "No such delivery.", "409": "An attempt is in flight."},
            )
        },
        "/webhooks/replay": {
            "post": _operation(
                "replayDeliveries",
                "Deliver again every failed or dead delivery since a time",
                "How many deliveries were queued again.",
                problems,
                status="202",
                body=_replay_body(),
                extra={
                    "400": "Malformed JSON (or not UTF-8), or a body that is malformed or "
                    "ended early.",
                    "413": "Body over the size limit.",
                    "404": "No configured endpoint with this id.",
                    "415": "Content-Type is not application/json.",
                    "422": "Invalid body: a bad or unknown field, a key given twice, or an "
                    "unpaired surrogate (errors names the field).",
                },
            )
        },
        "/webhooks/endpoints": {
            "get": _operation(
                "listEndpoints",
                "Configured webhook endpoints (never their secrets)",
                "Endpoints with their event types and whether they are enabled.",
                problems,
            )
        },
        "/webhooks/endpoints/{endpoint_id}/enable": {
            "post": _operation(
                "enableEndpoint",
                "Enable an endpoint disabled after a 410",
                "The endpoint.",
                problems,
                path_param="endpoint_id",
                extra={"404": "No such endpoint."},
            )
        },
    }

"""HTTP API for operators: the delivery log, retry and replay, endpoint state (Flask Blueprint).

No auth here: the app registers ``blueprint`` behind its own ``before_request`` check and calls
``init_app(app, admin)`` once. Errors are the API's RFC 9457 problems (``bridge.api.problems``).
"""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from bridge.api.problems import (
    DELIVERY_IN_FLIGHT,
    DELIVERY_NOT_FOUND,
    ENDPOINT_NOT_FOUND,
    VALIDATION,
    FieldError,
    Problem,
    invalid,
)
from bridge.api.request_body import read_json
from bridge.config.settings import Settings
from bridge.webhooks.admin import WebhookAdmin, decode_cursor
from bridge.webhooks.errors import DeliveryInFlight, DeliveryNotFound, EndpointNotFound
from bridge.webhooks.events import ALL_EVENT_TYPES
from bridge.webhooks.log import DeliveryStatus

blueprint = Blueprint("webhooks", __name__)
EXTENSION_KEY = "ucwa_bridge.webhooks"
MAX_LIMIT = 200
REPLAY_FIELDS = frozenset({"since", "endpoint"})


def init_app(app: Flask, admin: WebhookAdmin) -> None:
    """Give the blueprint's views the admin object (Redis connection, endpoints, settings)."""
    app.extensions[EXTENSION_KEY] = admin


def _admin() -> WebhookAdmin:
    admin: WebhookAdmin = current_app.extensions[EXTENSION_KEY]
    return admin


@blueprint.errorhandler(Problem)
def _problem(exc: Problem) -> Response:
    return exc.to_response()


@blueprint.errorhandler(DeliveryNotFound)
def _no_delivery(exc: DeliveryNotFound) -> Response:
    detail = f"no delivery {exc} (unknown or past retention)"
    return Problem(DELIVERY_NOT_FOUND, detail).to_response()


@blueprint.errorhandler(DeliveryInFlight)
def _in_flight(exc: DeliveryInFlight) -> Response:
    detail = f"delivery {exc} is queued or being attempted; try again later"
    return Problem(DELIVERY_IN_FLIGHT, detail).to_response()


@blueprint.errorhandler(EndpointNotFound)
def _no_endpoint(exc: EndpointNotFound) -> Response:
    return Problem(ENDPOINT_NOT_FOUND, f"no configured endpoint {exc}").to_response()


@blueprint.get("/webhooks/deliveries")
def list_deliveries() -> Response:
    args = request.args
    status = args.get("status") or None
    if status is not None and status not in {s.value for s in DeliveryStatus}:
        raise invalid("status", "one of " + ", ".join(s.value for s in DeliveryStatus))
    event_type = args.get("type") or None
    if event_type is not None and event_type not in ALL_EVENT_TYPES:
        raise invalid("type", "unknown event type")
    raw_limit = args.get("limit", "50")
    # isdigit() alone admits superscripts such as "²", which int() refuses: ASCII digits only
    if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise invalid("limit", f"an integer from 1 to {MAX_LIMIT}")
    cursor = None
    if args.get("cursor"):
        try:
            cursor = decode_cursor(args["cursor"])
        except ValueError:
            raise invalid("cursor", "not a cursor returned by this API") from None
    return jsonify(
        _admin().list_deliveries(
            status=status,
            endpoint_id=args.get("endpoint") or None,
            event_type=event_type,
            limit=int(raw_limit),
            cursor=cursor,
        )
    )


@blueprint.get("/webhooks/deliveries/<delivery_id>")
def get_delivery(delivery_id: str) -> Response:
    return jsonify(_admin().get_delivery(delivery_id))


@blueprint.post("/webhooks/deliveries/<delivery_id>/retry")
def retry_delivery(delivery_id: str) -> tuple[Response, int]:
    return jsonify(_admin().retry(delivery_id)), 202


@blueprint.post("/webhooks/replay")
def replay() -> tuple[Response, int]:
    # the API's BRIDGE_MAX_BODY_BYTES, which create_app puts in MAX_CONTENT_LENGTH
    body = read_json(current_app.config.get("MAX_CONTENT_LENGTH") or Settings.max_body_bytes)
    if not isinstance(body, dict):
        raise invalid("body", "a JSON object is required")
    unknown = sorted(set(body) - REPLAY_FIELDS)
    if unknown:  # as the OpenAPI document says: no other fields
        raise Problem(
            VALIDATION,
            f"{len(unknown)} unknown field(s)",
            errors=[FieldError(name, "unknown field", "unknown_field") for name in unknown[:20]],
        )
    since_raw = body.get("since")
    if not isinstance(since_raw, str):
        raise invalid("since", "an RFC 3339 timestamp is required")
    try:
        since = datetime.fromisoformat(since_raw.replace("Z", "+00:00"))
    except ValueError:
        raise invalid("since", "not an RFC 3339 timestamp") from None
    if since.tzinfo is None:
        raise invalid("since", "must include a UTC offset or Z")
    endpoint_id = body.get("endpoint")
    if endpoint_id is not None and not isinstance(endpoint_id, str):
        raise invalid("endpoint", "an endpoint id string")
    if endpoint_id is not None and endpoint_id not in _admin().endpoints:
        raise EndpointNotFound(endpoint_id)
    return jsonify({"replayed": _admin().replay(since, endpoint_id)}), 202


@blueprint.get("/webhooks/endpoints")
def list_endpoints() -> Response:
    return jsonify({"items": _admin().list_endpoints()})


@blueprint.post("/webhooks/endpoints/<endpoint_id>/enable")
def enable_endpoint(endpoint_id: str) -> Response:
    return jsonify(_admin().enable_endpoint(endpoint_id))

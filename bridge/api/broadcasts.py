"""``POST /broadcasts`` (one message to many people, stored all together or not at all) and
``GET /broadcasts/<id>`` (its messages and their counts per status).

The views authenticate themselves: a broadcast counts against the key's rate limit as its
number of recipients (``RateLimiter.gate``), decided inside the intake's own script call. The
app calls ``init_app(app, views)`` once.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace

from flask import Blueprint, Flask, Response, current_app, g, request

from bridge.api.auth import Authenticator, Caller
from bridge.api.bodies import outgoing_html
from bridge.api.broadcast_request import parse_broadcast_request
from bridge.api.idempotency import HEADER as IDEMPOTENCY_HEADER
from bridge.api.idempotency import (
    REPLAYED_HEADER,
    Claim,
    IdempotencyStore,
    StoredResponse,
    fingerprint,
    validate_key,
)
from bridge.api.problems import BROADCAST_NOT_FOUND, IDEMPOTENCY_IN_PROGRESS, Problem
from bridge.api.rate_limit import RateLimiter, count_request
from bridge.api.request_body import read_json
from bridge.api.schemas import MAX_URI_CHARS, Limits, parse_rfc3339
from bridge.api.sender_account import choose_account
from bridge.config.accounts import Accounts
from bridge.config.settings import Scope
from bridge.observability.logging import KEY_ID_ENVIRON
from bridge.outbound.broadcasts import (
    BROADCAST_ID,
    MAX_RECIPIENTS,
    Broadcast,
    BroadcastStore,
    new_broadcast_id,
)
from bridge.outbound.intake import Intake, IntakeConflict
from bridge.outbound.messages import MessageRecord, MessageStatus

blueprint = Blueprint("broadcasts", __name__)
EXTENSION_KEY = "ucwa_bridge.broadcasts"
JSON = "application/json"
log = logging.getLogger(__name__)


def body_limit(max_body_bytes: int) -> int:
    """A broadcast's body may also carry its recipients: the longest allowed, quoted."""
    return max_body_bytes + MAX_RECIPIENTS * (MAX_URI_CHARS + 4)


@dataclass(frozen=True)
class BroadcastViews:
    auth: Authenticator
    limiter: RateLimiter
    idempotency: IdempotencyStore
    intake: Intake
    broadcasts: BroadcastStore
    limits: Limits
    max_body_bytes: int
    default_validity_s: int
    accounts: Accounts = field(default_factory=Accounts.none)


def init_app(app: Flask, views: BroadcastViews) -> None:
    app.extensions[EXTENSION_KEY] = views


def _views() -> BroadcastViews:
    views: BroadcastViews = current_app.extensions[EXTENSION_KEY]
    return views


def _caller(views: BroadcastViews, scope: Scope) -> Caller:
    caller = views.auth.authenticate(request.headers.get("Authorization"), scope)
    request.environ[KEY_ID_ENVIRON] = caller.key_id  # for the access log line
    return caller


def _count(views: BroadcastViews, caller: Caller) -> None:
    """Count one request against the key's limit on its own (429 beyond it)."""
    count_request(views.limiter, caller.key_id)


@blueprint.post("/broadcasts")
def send_broadcast() -> Response:
    views = _views()
    caller = _caller(views, Scope.SEND)
    header = request.headers.get(IDEMPOTENCY_HEADER)
    try:
        if header is not None:
            validate_key(header)
        limit = body_limit(views.max_body_bytes)
        request.max_content_length = limit
        body = read_json(limit)
        payload = parse_broadcast_request(body, views.limits)
        html = outgoing_html(payload, views.limits)
        account = choose_account(views.accounts, caller, payload.from_)
    except Exception:
        _count(views, caller)  # a refused request counts once; a 429 wins
        raise
    now = time.time()
    broadcast_id = new_broadcast_id()
    send_at = None if payload.send_at is None else parse_rfc3339(payload.send_at)
    records = [
        replace(
            MessageRecord.new(
                to=uri,
                text=payload.text,
                html=html,
                subject=payload.subject,
                importance=payload.importance,
                validity_s=payload.validity or views.default_validity_s,
                now=now,
                send_at=send_at,
                account=account,
            ),
            broadcast=broadcast_id,
            idempotency_key=header,
        )
        for uri in payload.recipients()
    ]
    broadcast = Broadcast.of(broadcast_id, records)
    answer = _accepted(broadcast, records)
    claim: Claim | None = None
    if header is not None:
        begun = views.idempotency.begin(
            caller.key_id,
            header,
            fingerprint(request.method, request.path, body),
            lambda _record: answer,
        )
        if isinstance(begun, StoredResponse):
            _count(views, caller)
            headers = {**begun.headers, REPLAYED_HEADER: "true"}
            return Response(begun.body, status=begun.status, mimetype=JSON, headers=headers)
        claim = begun
    gate = views.limiter.gate(caller.key_id, cost=len(records))
    try:
        reply = views.intake.submit_batch(
            records,
            views.broadcasts.batch(broadcast, records),
            gate,
            None if claim is None else claim.completion(answer),
        )
    except BaseException as exc:
        if claim is not None:
            claim.release()
        if isinstance(exc, IntakeConflict):
            raise Problem(IDEMPOTENCY_IN_PROGRESS, str(exc), headers={"Retry-After": "1"}) from exc
        raise
    if gate is not None:
        decision = views.limiter.decide(caller.key_id, reply)
        g.rate_limit_headers = decision.headers
        if not decision.allowed:
            if claim is not None:
                claim.release()
            raise decision.refusal()
    log.info(
        "broadcast accepted",
        extra={"broadcast_id": broadcast_id, "key_id": caller.key_id, "count": len(records)},
    )
    return Response(answer.body, status=answer.status, mimetype=JSON, headers=answer.headers)


def _accepted(broadcast: Broadcast, records: list[MessageRecord]) -> StoredResponse:
    first = records[0].status
    counts = {status.value: len(records) if status is first else 0 for status in MessageStatus}
    return StoredResponse(
        202,
        json.dumps(broadcast.view(counts), ensure_ascii=False),
        {"Location": f"/broadcasts/{broadcast.id}"},
    )


@blueprint.get("/broadcasts/<broadcast_id>")
def get_broadcast(broadcast_id: str) -> Response:
    views = _views()
    _count(views, _caller(views, Scope.READ))
    found = views.broadcasts.get(broadcast_id) if BROADCAST_ID.match(broadcast_id) else None
    if found is None:
        raise Problem(BROADCAST_NOT_FOUND, "no broadcast has this id (or it has expired)")
    view = found.view(views.broadcasts.counts(found.id))
    return Response(json.dumps(view, ensure_ascii=False), mimetype=JSON)

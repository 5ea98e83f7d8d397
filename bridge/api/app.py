"""The Flask application: routes for messages, probes and the OpenAPI document.

Every error leaves as problem+json; unexpected exceptions are logged, never shown.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, replace
from typing import Any

import redis
from flask import Flask, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from bridge.api import broadcasts as broadcasts_api
from bridge.api import conversations as conversations_api
from bridge.api import message_list
from bridge.api import webhooks as webhooks_api
from bridge.api.auth import Authenticator, Caller
from bridge.api.bodies import outgoing_html
from bridge.api.health import readiness
from bridge.api.idempotency import (
    HEADER as IDEMPOTENCY_HEADER,
)
from bridge.api.idempotency import (
    REPLAYED_HEADER,
    Claim,
    IdempotencyStore,
    StoredResponse,
    fingerprint,
    validate_key,
)
from bridge.api.openapi import build_document
from bridge.api.problems import (
    BAD_REQUEST,
    HTTP_ERROR,
    IDEMPOTENCY_IN_PROGRESS,
    INTERNAL,
    MESSAGE_NOT_CANCELLABLE,
    MESSAGE_NOT_FOUND,
    METHOD_NOT_ALLOWED,
    NOT_FOUND,
    PAYLOAD_TOO_LARGE,
    UNAVAILABLE,
    Problem,
    ProblemType,
)
from bridge.api.rate_limit import RateLimiter, count_request
from bridge.api.request_body import check_request_text, read_json
from bridge.api.schemas import (
    DEFAULT_CANCEL_REASON,
    Limits,
    parse_cancel_request,
    parse_rfc3339,
    parse_send_request,
)
from bridge.api.sender_account import choose_account
from bridge.config.accounts import DEFAULT_ID
from bridge.config.redis_conn import connect
from bridge.config.redis_faults import redis_unavailable
from bridge.config.settings import Scope, Settings
from bridge.observability.health import accounts_readiness, api_readiness, max_pulse_age_s
from bridge.observability.logging import (
    KEY_ID_ENVIRON,
    add_secrets,
    current_context,
    pop_context,
    push_context,
    request_id_from,
)
from bridge.observability.metrics import (
    NOT_OBSERVED_BY_API,
    instrument_http,
    metrics_response,
)
from bridge.outbound.broadcasts import BroadcastStore
from bridge.outbound.intake import Gate, Intake, IntakeConflict
from bridge.outbound.message_search import MessageSearch
from bridge.outbound.messages import (
    MessageNotFound,
    MessageRecord,
    MessageStore,
    NotCancellable,
    recipient_key,
)
from bridge.outbound.outcomes import Outbound
from bridge.outbound.status_events import status_hook
from bridge.session.conversations import ConversationLog, ConversationRegistry
from bridge.webhooks.admin import WebhookAdmin, url_secrets
from bridge.webhooks.endpoints import WebhookEndpoint, webhook_config
from bridge.webhooks.settings import WebhookSettings

log = logging.getLogger(__name__)

JSON = "application/json"
_MESSAGE_ID = re.compile(r"^msg_[0-9a-f]{32}$")
_HTTP_PROBLEMS = {
    400: BAD_REQUEST,
    404: NOT_FOUND,
    405: METHOD_NOT_ALLOWED,
    413: PAYLOAD_TOO_LARGE,
}


@dataclass(frozen=True)
class Services:
    """What the views need, built once per app."""

    settings: Settings
    redis: redis.Redis
    auth: Authenticator
    store: MessageStore
    intake: Intake
    idempotency: IdempotencyStore
    limiter: RateLimiter
    limits: Limits
    openapi: dict[str, Any]
    outbound: Outbound  # cancels: ends a message and starts the next one in its line


def create_app(settings: Settings, redis_client: redis.Redis | None = None) -> Flask:
    """Build the API. ``redis_client`` must not decode responses (RQ stores bytes)."""
    client = redis_client or connect(
        settings.redis_url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30
    )
    store = MessageStore(client, record_ttl_s=settings.record_ttl_s)
    endpoints, webhook_settings = webhook_config()
    # Answers show endpoint URLs redacted; logs must not show what the answers hide.
    add_secrets(secret for endpoint in endpoints for secret in url_secrets(endpoint.url))
    services = Services(
        settings=settings,
        redis=client,
        auth=Authenticator(settings.api_keys, disabled=settings.auth_disabled),
        store=store,
        intake=Intake(client, store),
        idempotency=IdempotencyStore(
            client, settings.idempotency_ttl_s, settings.idempotency_lock_ttl_s
        ),
        limiter=RateLimiter(client, settings.rate_limit, settings.rate_limit_keys),
        limits=Limits(settings.max_message_chars),
        openapi=build_document(settings.max_message_chars),
        outbound=_outbound(client, store, settings, endpoints, webhook_settings),
    )
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["bridge"] = services
    instrument_http(app)  # first hook: every request is counted and timed

    app.add_url_rule("/messages", "send_message", send_message, methods=["POST"])
    app.add_url_rule("/messages/<message_id>", "get_message", get_message, methods=["GET"])
    app.add_url_rule(
        "/messages/<message_id>/cancel", "cancel_message", cancel_message, methods=["POST"]
    )
    app.add_url_rule("/healthz", "healthz", healthz, methods=["GET"])
    app.add_url_rule("/readyz", "readyz", readyz, methods=["GET"])
    app.add_url_rule("/openapi.json", "openapi", openapi, methods=["GET"])
    app.add_url_rule(
        "/metrics",
        "metrics",
        lambda: metrics_response(client, settings.accounts or None, NOT_OBSERVED_BY_API),
        methods=["GET"],
    )

    webhooks_api.init_app(app, WebhookAdmin(client, webhook_settings, endpoints))
    app.register_blueprint(webhooks_api.blueprint)
    account = (settings.ucwa_username or "").lower()
    conversations_api.init_app(
        app,
        conversations_api.ConversationViews(
            client,
            ConversationRegistry(client, account),
            ConversationLog(client),
            store,
            tuple(ConversationRegistry(client, a.key, a.id) for a in settings.accounts),
        ),
    )
    app.register_blueprint(conversations_api.blueprint)
    message_list.init_app(app, MessageSearch(client))
    app.register_blueprint(message_list.blueprint)
    broadcasts_api.init_app(
        app,
        broadcasts_api.BroadcastViews(
            auth=services.auth,
            limiter=services.limiter,
            idempotency=services.idempotency,
            intake=services.intake,
            broadcasts=BroadcastStore(client, store),
            limits=services.limits,
            max_body_bytes=settings.max_body_bytes,
            default_validity_s=settings.default_validity_s,
            accounts=settings.accounts,
        ),
    )
    app.register_blueprint(broadcasts_api.blueprint)
    app.before_request(_begin_request)
    app.before_request(check_request_text)
    app.before_request(_authorize_webhooks)
    app.after_request(_echo_request_id)
    app.after_request(_add_rate_limit_headers)
    app.teardown_request(_end_request)

    app.register_error_handler(Problem, _problem_response)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(redis.RedisError, _redis_error)
    app.register_error_handler(Exception, _unexpected_error)
    return app


def _outbound(
    client: redis.Redis,
    store: MessageStore,
    settings: Settings,
    endpoints: list[WebhookEndpoint],
    webhook_settings: WebhookSettings,
) -> Outbound:
    """What a cancel runs through: the ``message.cancelled`` event staged with the change."""
    account = (settings.ucwa_username or "").lower() or None
    hook = status_hook(endpoints, webhook_settings, account=account) if endpoints else None
    return Outbound(client, store, on_final=hook, account=account)


REQUEST_ID_HEADER = "X-Request-ID"


def _begin_request() -> None:
    """Every log line of this request carries its id: the caller's X-Request-ID or a new one."""
    g.log_token = push_context(request_id=request_id_from(request.headers.get(REQUEST_ID_HEADER)))


def _echo_request_id(response: Response) -> Response:
    request_id = current_context().get("request_id")
    if request_id:
        response.headers[REQUEST_ID_HEADER] = str(request_id)
    return response


def _add_rate_limit_headers(response: Response) -> Response:
    for name, value in g.get("rate_limit_headers", {}).items():
        response.headers.setdefault(name, value)
    return response


def _end_request(_error: BaseException | None) -> None:
    pop_context(g.pop("log_token", None))


def _authorize_webhooks() -> None:
    """The delivery log and conversations are read with the read scope; retry, replay and
    enable need send."""
    # OPTIONS only lists the allowed methods (Flask answers it), as on every other route.
    if request.blueprint not in _BLUEPRINTS or request.method == "OPTIONS":
        return
    _authorize(_services(), scope_for(request.method))


_BLUEPRINTS = frozenset(
    {webhooks_api.blueprint.name, conversations_api.blueprint.name, message_list.blueprint.name}
)
# HEAD answers what GET would, so it needs what GET needs, on every route.
_READING_METHODS = frozenset({"GET", "HEAD"})


def scope_for(method: str) -> Scope:
    """The scope a webhook admin request needs: ``read`` to look, ``send`` to act."""
    return Scope.READ if method.upper() in _READING_METHODS else Scope.SEND


def _authorize(services: Services, scope: Scope) -> Caller:
    """The caller (401/403 otherwise), counted against its key's rate limit (429 beyond it)."""
    caller = services.auth.authenticate(request.headers.get("Authorization"), scope)
    request.environ[KEY_ID_ENVIRON] = caller.key_id  # for the access log line
    _count(services, caller)
    return caller


def _services() -> Services:
    services: Services = current_app.extensions["bridge"]
    return services


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(data, ensure_ascii=False), status=status, mimetype=JSON, headers=headers
    )


def send_message() -> Response:
    services = _services()
    caller = services.auth.authenticate(request.headers.get("Authorization"), Scope.SEND)
    request.environ[KEY_ID_ENVIRON] = caller.key_id  # for the access log line
    gate = None if IDEMPOTENCY_HEADER in request.headers else services.limiter.gate(caller.key_id)
    if gate is not None:
        return _send_gated(services, caller, gate)
    _count(services, caller)
    record, body = _new_record(services, caller)
    claim = _claim(services, caller, body)
    if isinstance(claim, StoredResponse):
        return Response(
            claim.body,
            status=claim.status,
            mimetype=JSON,
            headers={**claim.headers, REPLAYED_HEADER: "true"},
        )
    if claim is not None:
        record = replace(record, idempotency_key=request.headers[IDEMPOTENCY_HEADER])
    try:
        stored = services.intake.submit(record, claim)
    except BaseException as exc:
        if claim is not None:
            _release_quietly(claim)
        if isinstance(exc, IntakeConflict):
            kind = IDEMPOTENCY_IN_PROGRESS if claim is not None else UNAVAILABLE
            raise Problem(kind, str(exc), headers={"Retry-After": "1"}) from exc
        raise
    return _created(caller, stored)


def _send_gated(services: Services, caller: Caller, gate: Gate) -> Response:
    """One round trip to Redis: the rate limiter decides inside the intake's script.

    A request refused before it (415, 400, 413, 422) still counts, and a 429 still wins.
    """
    try:
        record, _ = _new_record(services, caller)
    except Exception:
        _count(services, caller)
        raise
    reply, stored = services.intake.submit_gated(record, gate)
    decision = services.limiter.decide(caller.key_id, reply)
    g.rate_limit_headers = decision.headers
    if stored is None:
        raise decision.refusal()
    return _created(caller, stored)


def _count(services: Services, caller: Caller) -> None:
    """Count the request against the caller's rate limit on its own (429 beyond it)."""
    count_request(services.limiter, caller.key_id)


def _new_record(services: Services, caller: Caller) -> tuple[MessageRecord, Any]:
    """The message in the request, validated and sanitised (4xx otherwise), and the body."""
    body = read_json(services.settings.max_body_bytes)
    payload = parse_send_request(body, services.limits)
    html = outgoing_html(payload, services.limits)
    conversation = (
        ConversationRegistry(services.redis, "").get(payload.conversation)
        if payload.conversation
        else None
    )
    account = choose_account(
        services.settings.accounts,
        caller,
        payload.from_,
        (conversation.account or DEFAULT_ID) if conversation else None,
    )
    record = MessageRecord.new(
        to=payload.to,
        conversation=payload.conversation,
        text=payload.text,
        html=html,
        subject=payload.subject,
        importance=payload.importance,
        validity_s=payload.validity or services.settings.default_validity_s,
        send_at=None if payload.send_at is None else parse_rfc3339(payload.send_at),
        account=account,
    )
    if payload.conversation and account != DEFAULT_ID:
        # The line of the person the conversation is with, of this account.
        person = conversation.remote if conversation else None
        line = recipient_key(person, None if person else payload.conversation, account)
        record = replace(record, line=line)
    return record, body


def _created(caller: Caller, stored: MessageRecord) -> Response:
    log.info("message accepted", extra={"message_id": stored.id, "key_id": caller.key_id})
    response = _accepted(stored)
    return Response(response.body, status=response.status, mimetype=JSON, headers=response.headers)


def _claim(services: Services, caller: Caller, body: Any) -> Claim | StoredResponse | None:
    header = request.headers.get(IDEMPOTENCY_HEADER)
    if header is None:
        return None
    return services.idempotency.begin(
        caller.key_id,
        validate_key(header),
        fingerprint(request.method, request.path, body),
        _accepted,
    )


def _accepted(record: MessageRecord) -> StoredResponse:
    return StoredResponse(
        202,
        json.dumps(record.public_view(), ensure_ascii=False),
        {"Location": f"/messages/{record.id}"},
    )


def _release_quietly(claim: Claim) -> None:
    try:
        claim.release()
    except redis.RedisError:
        log.warning("could not release an idempotency claim; it expires on its own")


def get_message(message_id: str) -> Response:
    services = _services()
    _authorize(services, Scope.READ)
    if not _MESSAGE_ID.match(message_id):
        raise Problem(MESSAGE_NOT_FOUND, "no message has this id")
    try:
        record = services.store.get(message_id)
    except MessageNotFound:
        raise Problem(MESSAGE_NOT_FOUND, "no message has this id") from None
    return _json(record.public_view())


def cancel_message(message_id: str) -> Response:
    """Cancel a message nothing of which is with UCWA yet; 200 with the record (again, when it
    was cancelled already), 409 with its status when it is posting, sent or final."""
    services = _services()
    caller = _authorize(services, Scope.SEND)
    reason = _cancel_reason(services)
    if not _MESSAGE_ID.match(message_id):
        raise Problem(MESSAGE_NOT_FOUND, "no message has this id")
    try:
        record = services.outbound.cancel(message_id, reason)
    except MessageNotFound:
        raise Problem(MESSAGE_NOT_FOUND, "no message has this id") from None
    except NotCancellable as exc:
        status = exc.record.status.value
        detail = (
            f"the message is {status}"
            if exc.record.status.is_terminal
            else f"the message is {status} and already with UCWA"
        )
        raise Problem(
            MESSAGE_NOT_CANCELLABLE, detail, extensions={"message_status": status}
        ) from None
    log.info("message cancel answered", extra={"message_id": record.id, "key_id": caller.key_id})
    return _json(record.public_view())


def _cancel_reason(services: Services) -> str:
    """The reason in the optional JSON body."""
    has_body = request.content_length or "Transfer-Encoding" in request.headers
    if not has_body:
        return DEFAULT_CANCEL_REASON
    return parse_cancel_request(read_json(services.settings.max_body_bytes))


def healthz() -> Response:
    return _json({"status": "ok"})


def readyz() -> Response:
    """Ready when Redis takes writes and every configured account has a live poller; with
    several accounts the answer also gives each account's state."""
    services = _services()
    accounts = services.settings.accounts
    if accounts:
        keys = [account.key for account in accounts]
        ok, reasons = api_readiness(services.redis, keys, max_pulse_age_s())
    else:
        ok, reasons = readiness(services.redis)
    body: dict[str, Any] = {"status": "ready" if ok else "not ready"}
    if not ok:
        body["reasons"] = reasons
    if len(accounts) > 1 and not any(r.startswith("redis") for r in reasons):
        _, by_key = accounts_readiness(services.redis, keys, max_pulse_age_s())
        body["accounts"] = {
            account.id: {"ready": not by_key[account.key], "reasons": by_key[account.key]}
            for account in accounts
        }
    return _json(body, status=200 if ok else 503)


def openapi() -> Response:
    return _json(_services().openapi)


def _problem_response(problem: Problem) -> Response:
    return problem.to_response(request.path)


def _http_error(error: HTTPException) -> Response:
    code = error.code or 500
    kind = _HTTP_PROBLEMS.get(code) or ProblemType(HTTP_ERROR.slug, code, error.name)
    headers = {}
    if code == 405:
        headers = {k: v for k, v in error.get_headers() if k == "Allow"}
    detail = None
    if code == 413:
        detail = f"the body exceeds {_services().settings.max_body_bytes} bytes"
    return Problem(kind, detail, headers=headers).to_response(request.path)


def _redis_error(error: redis.RedisError) -> Response:
    # Down, read-only, full, loading or failing over (redis_unavailable): the caller retries.
    # Anything else is still refused with 503, but logged with its traceback as a bug.
    if redis_unavailable(error):
        log.warning("redis unavailable", extra={"error": type(error).__name__})
    else:
        log.error("redis error", extra={"error": type(error).__name__}, exc_info=error)
    return Problem(
        UNAVAILABLE, "storage is unavailable; retry later", headers={"Retry-After": "5"}
    ).to_response(request.path)


def _unexpected_error(error: Exception) -> Response:
    log.exception("unexpected error")
    return Problem(INTERNAL, "an unexpected error occurred").to_response(request.path)

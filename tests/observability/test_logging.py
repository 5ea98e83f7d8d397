"""JSON log lines: one object per line with the correlation ids, and secrets redacted.

Each test logs through its own handler, so pytest's capture and other tests are untouched.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from bridge.observability.logging import (
    REDACTED,
    JsonFormatter,
    RedactingFormatter,
    add_secrets,
    configure_logging,
    log_context,
    pop_context,
    push_context,
    redact,
    request_id_from,
)
from bridge.webhooks.delivery import AttemptOutcome, log_outcome


@pytest.fixture()
def capture() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.observability.json")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_one_json_object_per_line_with_ids(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    logger.info(
        "send attempt: %s",
        "invited",
        extra={"message_id": "msg_1", "job_id": "job_1", "operation_id": "msg_1", "fence": 3},
    )
    logger.warning("two\nlines")
    first, second = lines(stream)
    assert first["level"] == "INFO" and first["logger"] == "test.observability.json"
    assert first["message"] == "send attempt: invited"
    ids = (first["message_id"], first["job_id"], first["operation_id"])
    assert ids == ("msg_1", "job_1", "msg_1")
    assert first["fence"] == 3 and "request_id" not in first
    assert first["time"].endswith("Z") and len(first["time"]) == len("2024-05-01T12:00:00.123Z")
    assert second["message"] == "two\nlines"


def test_context_ids_apply_inside_the_block(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    with log_context(request_id="req_9", job_id=None):
        logger.info("inside", extra={"message_id": "msg_2"})
    logger.info("outside")
    inside, outside = lines(stream)
    assert inside["request_id"] == "req_9" and inside["message_id"] == "msg_2"
    assert "job_id" not in inside and "request_id" not in outside


def test_push_and_pop_for_request_hooks(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    token = push_context(request_id=request_id_from("abc-123"))
    logger.info("during")
    pop_context(token)
    pop_context(None)
    logger.info("after")
    during, after = lines(stream)
    assert during["request_id"] == "abc-123" and "request_id" not in after
    assert request_id_from("bad id\nwith newline").startswith("req_")
    assert request_id_from(None) != request_id_from(None)


def test_exceptions_are_included_and_scrubbed(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    try:
        raise RuntimeError("401 for Bearer cwt=abcDEF123")
    except RuntimeError:
        logger.exception("failed")
    (entry,) = lines(stream)
    assert "RuntimeError" in entry["exc_info"] and "abcDEF123" not in entry["exc_info"]


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer eyJhbGciOi.payload.sig", "eyJhbGciOi.payload.sig"),
        ("headers={'Authorization': 'Basic dXNlcjpwYXNz'}", "dXNlcjpwYXNz"),
        ("GET /ucwa/events?ack=1 token cwt=AAEAAHm9Zz-Yq_x&x=1", "AAEAAHm9Zz-Yq_x"),
        ("grant_type=password&username=bot&password=hunter2!x", "hunter2!x"),
        ('{"password": "s3cret-pass"}', "s3cret-pass"),
        ("endpoint secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw rotated", "MfKQ9r8GKYqr"),
        ("api_key=k_live_0123456789abcdef", "k_live_0123456789abcdef"),
        ('{"access_token":"tok-123-456","expires_in":28800}', "tok-123-456"),
        ("connecting to redis://:redispass@cache:6379/0", "redispass"),
    ],
)
def test_secrets_are_redacted_in_messages(
    capture: tuple[logging.Logger, io.StringIO], text: str, secret: str
) -> None:
    logger, stream = capture
    logger.info(text)
    (entry,) = lines(stream)
    assert secret not in entry["message"]
    assert REDACTED in entry["message"]


def test_configured_api_keys_are_redacted_anywhere(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = capture
    add_secrets(["opaque-api-key-0123456789", "short", None])
    logger.info("caller used opaque-api-key-0123456789 from the CI")
    logger.info("a short word stays")
    first, second = lines(stream)
    assert first["message"] == f"caller used {REDACTED} from the CI"
    assert second["message"] == "a short word stays"


def test_extras_are_redacted_by_name_and_by_content(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = capture
    logger.info(
        "request",
        extra={
            "password": "pw-in-extra",
            "headers": {"Authorization": "Bearer abc.def", "Accept": "application/json"},
            "url": "https://lync.contoso.com/ucwa?cwt=XYZ123",
            "key_id": "3f2a9c",
            "token_expires_at": 1714560000.0,
            "webhook_secret": "whsec_abcdefabcdefabcdef",
        },
    )
    (entry,) = lines(stream)
    assert entry["password"] == REDACTED
    assert entry["headers"] == {"Authorization": REDACTED, "Accept": "application/json"}
    assert entry["url"] == f"https://lync.contoso.com/ucwa?cwt={REDACTED}"
    assert entry["key_id"] == "3f2a9c"
    assert entry["token_expires_at"] == 1714560000.0
    assert entry["webhook_secret"] == REDACTED


@pytest.mark.parametrize(
    "text",
    [
        "AUTHORIZATION=Basic dXNlcjpwYXNz",
        "BEARER abc.def.ghi",
        "url ?CWT=AAEAAHm9Zz",
        "PASSWD: hunter2!x",
        "Pwd=hunter2!x",
        "Client-Secret=hunter2!x",
        "X-API-KEY: k_live_0123456789",
        "APIKEYS=k_live_0123456789",
        "Refresh_Token=tok-123-456",
        "amqp://guest:hunter2!x@queue/",
        "pa\u017f\u017fword=hunter2!x",  # (?i) matches the long s as an s
        "author\u0131zation: Basic dXNlcjpwYXNz",  # and the dotless i as an i
    ],
)
def test_the_quick_pre_check_lets_every_pattern_through(text: str) -> None:
    """``redact`` skips the patterns when a cheap search finds none of their words."""
    redacted = redact(text)
    assert redacted != text
    assert REDACTED in redacted


def test_ordinary_text_is_left_alone() -> None:
    text = "message msg_0123 delivered to sip:alice@contoso.com; token_expires_at=1714560000"
    assert redact(text) == text


def test_text_format_is_redacted_too() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "Bearer abc.def", (), None)
    record.message_id = "msg_3"
    line = RedactingFormatter().format(record)
    assert "abc.def" not in line and line.endswith("[message_id=msg_3]")


def test_configure_logging_installs_one_json_handler() -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    stream = io.StringIO()
    try:
        configure_logging("DEBUG", json=True, stream=stream)
        configure_logging("INFO", json=True, stream=stream, secrets=["ucwa-password-123"])
        assert len(root.handlers) == 1 and root.level == logging.INFO
        logging.getLogger("bridge.test").info("login as bot with ucwa-password-123")
        logging.getLogger("bridge.test").debug("not shown")
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)
    (entry,) = lines(stream)
    assert entry["message"] == f"login as bot with {REDACTED}"


def test_webhook_attempts_log_their_fields_at_the_top_level() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("bridge.webhooks.delivery")
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO
    try:
        log_outcome(
            AttemptOutcome("dlv_1", "default", "message.received", 2, "retry", "http_500", 500, 12)
        )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    [line] = lines(stream)
    assert line["message"] == "webhook attempt"
    assert (line["delivery_id"], line["try_no"], line["verdict"]) == ("dlv_1", 2, "retry")
    assert (line["status_code"], line["latency_ms"]) == (500, 12)

"""Characters the API refuses where caller text becomes ``str``: unpaired surrogates in any
string of any body (keys too), in headers and query parameters; control characters in a
message's text, html and subject. Each is a 422 naming the field, never a 500 and never a
stored message that fails later."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bridge.api.problems import Problem, ProblemType
from bridge.api.schemas import MESSAGE_TEXT, NOT_BLANK
from bridge.ucwa.text import unencodable
from tests.api.conftest import bearer
from tests.api.test_limits import fields, post_raw

PROBLEM = "application/problem+json"
MESSAGE_FIELDS = ["text", "html", "subject"]
REFUSED = ["\ud83d", "\udc00", "\x00", "\x07", "\x1b", "\x7f", "\x0b"]
ANY_TEXT = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=30)
FIELD_CASES = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def body(field: str, value: str) -> bytes:
    """A valid message but for ``field``, which carries ``value`` after seven characters."""
    message = {"to": "sip:a@b.com", "text": "hello"}
    message.pop({"html": "text", "conversation": "to"}.get(field, ""), None)
    message[field] = f"before {value} after"
    return json.dumps(message).encode()  # ensure_ascii: a surrogate travels as \\u escape


def problem_fields(response: Any) -> dict[str, str]:
    assert response.mimetype == PROBLEM, response.get_data(as_text=True)
    return fields(response)


@pytest.mark.parametrize("value", REFUSED, ids=[f"U+{ord(c):04X}" for c in REFUSED])
@pytest.mark.parametrize("field", MESSAGE_FIELDS)
def test_a_refused_character_is_422_naming_the_field_and_position_and_nothing_is_stored(
    client: FlaskClient, redis_client: redis.Redis, field: str, value: str
) -> None:
    response = post_raw(client, body(field, value))

    assert response.status_code == 422, response.get_data(as_text=True)
    assert problem_fields(response) == {field: "invalid_characters"}
    message = response.get_json()["errors"][0]["message"]
    assert "at position 7" in message  # after "before "
    assert f"U+{ord(value):04X}" in message or "surrogate" in message
    assert not list(redis_client.scan_iter("msg:*"))


@pytest.mark.parametrize("value", ["\t", "\n", "\r\n", "\U0001f600", "\ufffd", "\u200b", "\x85"])
def test_tab_newlines_and_any_paired_character_are_delivered_intact(
    client: FlaskClient, value: str
) -> None:
    response = post_raw(client, body("text", value))

    assert response.status_code == 202
    assert response.get_json()["text"] == f"before {value} after"


@FIELD_CASES
@given(
    field=st.sampled_from(["to", "conversation", *MESSAGE_FIELDS, "importance", "extra"]),
    value=ANY_TEXT,
)
def test_any_string_in_any_message_field_is_202_or_a_problem_naming_it_never_a_500(
    fuzz_client: FlaskClient, field: str, value: str
) -> None:
    response = post_raw(fuzz_client, body(field, value))

    assert response.status_code in (202, 422), response.get_data(as_text=True)
    if response.status_code == 422:
        assert set(problem_fields(response)) == {field}
    json.dumps(response.get_json(), ensure_ascii=False).encode("utf-8")


@FIELD_CASES
@given(key=ANY_TEXT, value=ANY_TEXT, nested=st.booleans())
def test_any_key_any_depth_is_a_problem_never_a_500(
    fuzz_client: FlaskClient, key: str, value: str, nested: bool
) -> None:
    extra: Any = {key: [value]} if nested else value
    raw = json.dumps({"to": "sip:a@b.com", "text": "x", "x" if nested else key: extra})

    response = post_raw(fuzz_client, raw.encode())

    assert response.status_code in (202, 422), response.get_data(as_text=True)
    response.get_data(as_text=True).encode("utf-8")


def test_a_surrogate_in_a_key_or_deep_inside_is_named_by_its_path(client: FlaskClient) -> None:
    in_key = post_raw(client, b'{"to": "sip:a@b.com", "text": "x", "\\udc00k": 1}')
    assert problem_fields(in_key) == {"\ufffdk": "invalid_characters"}

    deep = post_raw(client, b'{"to": "sip:a@b.com", "text": "x", "cc": [1, {"n": "a\\ud800"}]}')
    assert deep.status_code == 422
    assert problem_fields(deep) == {"cc.1.n": "invalid_characters"}
    assert "position 1" in deep.get_json()["errors"][0]["message"]


@pytest.mark.parametrize("field", ["since", "endpoint", "padding"])
def test_replay_strings_are_checked_at_the_same_boundary(client: FlaskClient, field: str) -> None:
    replay = {"since": "2026-01-01T00:00:00Z", field: "x\ud83d"}

    response = client.post(
        "/webhooks/replay",
        data=json.dumps(replay),
        headers={**bearer(), "Content-Type": "application/json"},
    )

    assert response.status_code == 422
    assert problem_fields(response) == {field: "invalid_characters"}


@pytest.mark.parametrize("header", ["Idempotency-Key", "X-Request-ID", "Authorization", "X-Any"])
def test_a_surrogate_in_a_header_is_422_naming_the_header(
    client: FlaskClient, redis_client: redis.Redis, header: str
) -> None:
    # A real server decodes headers as ISO-8859-1; other WSGI servers and clients may not.
    headers = {**bearer(), "Content-Type": "application/json", header: "key-\udfff"}

    response = client.post("/messages", json={"to": "sip:a@b.com", "text": "x"}, headers=headers)

    assert response.status_code == 422
    named = {name.lower(): code for name, code in problem_fields(response).items()}
    assert named == {header.lower(): "invalid_characters"}  # header names ignore case
    assert not list(redis_client.scan_iter("msg:*"))


@pytest.mark.parametrize(
    "query, name",
    [("status=%FF", "status"), ("cursor=%ED%A0%BD", "cursor"), ("a%C3=1", "a\ufffd")],
)
def test_a_query_parameter_that_is_not_utf8_is_422_naming_it(
    client: FlaskClient, query: str, name: str
) -> None:
    response = client.get(f"/webhooks/deliveries?{query}", headers=bearer())

    assert response.status_code == 422
    assert problem_fields(response) == {name: "invalid_characters"}


def test_a_problem_quoting_caller_text_still_encodes() -> None:
    kind = ProblemType("validation-error", 422, "Request body failed validation")

    response = Problem(kind, "field a\ud83d: bad").to_response("/x")

    assert response.get_json()["detail"] == "field a\ufffd: bad"


@given(ANY_TEXT)
def test_the_documented_pattern_says_what_the_validator_does(value: str) -> None:
    # No JSON Schema pattern can see an unpaired surrogate; the boundary refuses those first.
    assume(not any("\ud800" <= c <= "\udfff" for c in value))
    accepted = unencodable(value) is None and NOT_BLANK.search(value) is not None
    assert (MESSAGE_TEXT.search(value) is not None) == accepted


@pytest.mark.parametrize("reference", ["&#27;", "&#x1b;", "&#x7f;", "&#1;", "&#X08;"])
def test_a_control_character_written_as_a_reference_in_html_is_refused_too(
    client: FlaskClient, redis_client: redis.Redis, reference: str
) -> None:
    # Sanitising decodes references, so the HTML sent would carry the character itself.
    response = client.post(
        "/messages",
        json={"to": "sip:a@b.com", "html": f"<b>red</b> {reference}[31m"},
        headers=bearer(),
    )

    assert response.status_code == 422, response.get_data(as_text=True)
    assert problem_fields(response) == {"html": "invalid_characters"}
    assert "once sanitised" in response.get_json()["errors"][0]["message"]
    assert not list(redis_client.scan_iter("msg:*"))

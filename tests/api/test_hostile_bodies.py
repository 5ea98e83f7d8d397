"""Hostile request bodies for both JSON endpoints (POST /messages, POST /webhooks/replay):
whatever the bytes, the answer is a problem with a 4xx status, never a 500."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
import redis
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.api import create_app
from tests.api.conftest import MakeSettings, bearer

PROBLEM = "application/problem+json"
ENDPOINTS = ["/messages", "/webhooks/replay"]
REFUSALS = {400, 413, 415, 422}
HOSTILE_CASES = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF)),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["to", "text", "html", "since", "endpoint", "validity"]) | st.text(),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


def post(client: FlaskClient, path: str, data: bytes, content_type: str | None = None) -> Any:
    headers = {**bearer()}
    if content_type is not None:
        headers["Content-Type"] = content_type
    return client.post(path, data=data, headers=headers)


def assert_refused(response: Any, *statuses: int) -> dict[str, Any]:
    assert response.status_code in (statuses or REFUSALS), response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    problem: dict[str, Any] = response.get_json()
    assert problem["status"] == response.status_code
    return problem


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize(
    "raw, status",
    [
        (b'{"to": "sip:a@b.com", "text": "x", "validity": 1' + b"0" * 5000 + b"}", 400),
        (b'{"since": 1' + b"0" * 5000 + b"}", 400),
        (b'{"to": "sip:a@b.com", "text": "x", "validity": 1e999}', 422),
        (b'{"to": "sip:a@b.com", "text": "x", "validity": NaN}', 400),
        (b'{"since": -Infinity}', 400),
        (b"[]", 422),
        (b'"x"', 422),
        (b"1", 422),
        (b"null", 422),
        (b"", 400),
        (b"\xef\xbb\xbf{}", 400),  # a UTF-8 byte order mark is not JSON
        (b'{"text": "caf\xe9"}', 400),  # ISO-8859-1, not UTF-8
        (b'{"text": "\xed\xa0\xbd"}', 400),  # a surrogate encoded as UTF-8 bytes
        (b'{"a": 1} trailing', 400),
    ],
)
def test_hostile_json_is_a_4xx_problem(
    make_settings: MakeSettings,
    redis_client: redis.Redis,
    path: str,
    raw: bytes,
    status: int,
) -> None:
    client = create_app(make_settings(), redis_client).test_client()  # 64 KiB bodies
    assert_refused(post(client, path, raw, "application/json"), status)


@pytest.mark.parametrize("path", ENDPOINTS)
def test_a_key_given_twice_is_422_naming_it(
    client: FlaskClient, redis_client: redis.Redis, path: str
) -> None:
    # Parsers disagree on which one wins: "sip:a@b.com" to one, "sip:c@d.com" to another.
    raw = b'{"to": "sip:a@b.com", "to": "sip:c@d.com", "text": "x", "since": "x"}'

    problem = assert_refused(post(client, path, raw, "application/json"), 422)

    assert problem["errors"] == [
        {"field": "to", "message": "appears more than once in one object", "code": "duplicate_key"}
    ]
    assert not list(redis_client.scan_iter("msg:*"))


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
def test_a_body_that_is_not_declared_json_is_415(
    client: FlaskClient, path: str, content_type: str | None
) -> None:
    raw = json.dumps({"to": "sip:a@b.com", "text": "x", "since": "2026-01-01T00:00:00Z"})

    response = post(client, path, raw.encode(), content_type)

    assert_refused(response, 415)
    assert response.headers["Accept-Post"] == "application/json"


@pytest.mark.parametrize(
    "since", ["0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59", "2026-13-01T00:00:00Z"]
)
def test_replay_timestamps_at_the_edges_of_the_calendar_are_answered(
    client: FlaskClient, since: str
) -> None:
    response = post(
        client, "/webhooks/replay", json.dumps({"since": since}).encode(), "application/json"
    )

    assert response.status_code in (202, 422), response.get_data(as_text=True)


def test_replay_refuses_unknown_fields_as_the_document_says(client: FlaskClient) -> None:
    raw = json.dumps({"since": "2026-01-01T00:00:00Z", "endpoints": ["a"]}).encode()

    problem = assert_refused(post(client, "/webhooks/replay", raw, "application/json"), 422)

    assert problem["errors"] == [
        {"field": "endpoints", "message": "unknown field", "code": "unknown_field"}
    ]


@HOSTILE_CASES
@given(path=st.sampled_from(ENDPOINTS), raw=st.binary(max_size=200))
def test_any_bytes_are_answered_never_a_500(
    fuzz_client: FlaskClient, path: str, raw: bytes
) -> None:
    response = post(fuzz_client, path, raw, "application/json")

    assert response.status_code in REFUSALS | {202}, response.get_data(as_text=True)
    if response.status_code != 202:
        assert_refused(response)


@HOSTILE_CASES
@given(path=st.sampled_from(ENDPOINTS), value=JSON_VALUES)
def test_any_json_value_is_answered_never_a_500(
    fuzz_client: FlaskClient, path: str, value: Any
) -> None:
    response = post(fuzz_client, path, json.dumps(value).encode(), "application/json")

    assert response.status_code in REFUSALS | {202}, response.get_data(as_text=True)
    if response.status_code != 202:
        assert_refused(response)
    response.get_data(as_text=True).encode("utf-8")


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("depth", [100, 900, 5000])
def test_deep_values_with_a_surrogate_at_the_bottom_are_answered(
    make_settings: MakeSettings, redis_client: redis.Redis, path: str, depth: int
) -> None:
    client = create_app(make_settings(), redis_client).test_client()  # 64 KiB bodies
    raw = b'{"cc": ' + b"[" * depth + b'"\\ud800"' + b"]" * depth + b"}"

    problem = assert_refused(post(client, path, raw, "application/json"), 400, 422)

    if problem["status"] == 422:
        assert problem["errors"][0]["field"] == "cc" + ".0" * depth


ROUTE_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], min_codepoint=1), min_size=1, max_size=40
)


@HOSTILE_CASES
@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]),
    route=st.sampled_from(
        [
            "/messages/{}",
            "/webhooks/deliveries/{}",
            "/webhooks/deliveries/{}/retry",
            "/webhooks/endpoints/{}/enable",
            "/webhooks/deliveries?cursor={}",
            "/webhooks/deliveries?limit={}&status={}&type={}&endpoint={}",
            "/{}",
        ]
    ),
    value=ROUTE_TEXT,
)
def test_any_path_or_query_text_on_any_route_is_answered_never_a_500(
    fuzz_client: FlaskClient, method: str, route: str, value: str
) -> None:
    response = fuzz_client.open(
        route.replace("{}", quote(value, safe="")), method=method, headers=bearer()
    )

    assert response.status_code < 500 or response.status_code == 503, response.get_data()
    if response.status_code >= 400 and method != "HEAD":
        assert response.mimetype == PROBLEM

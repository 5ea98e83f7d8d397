"""Request limits: body size, message length, fields, nesting, recipients, header sizes.

Each refusal is a problem naming what was too large; header limits are checked on a real
gunicorn started the way ``ucwa-bridge api`` starts it.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import requests
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.api import create_app
from bridge.ucwa.datauri import html_to_text
from tests.api.conftest import MakeSettings, bearer

PROBLEM = "application/problem+json"


def post_raw(client: FlaskClient, data: bytes | str) -> Any:
    return client.post(
        "/messages", data=data, headers={**bearer(), "Content-Type": "application/json"}
    )


def fields(response: Any) -> dict[str, str]:
    return {error["field"]: error["code"] for error in response.get_json()["errors"]}


def test_body_over_the_limit_is_413_before_it_is_parsed(client: FlaskClient) -> None:
    response = post_raw(client, b'{"to": "sip:a@b.com", "text": "' + b"x" * 5000 + b'"}')

    assert response.status_code == 413
    assert response.mimetype == PROBLEM
    assert response.get_json()["detail"] == "the body exceeds 4096 bytes"


@pytest.mark.parametrize("name", ["text", "html"])
def test_text_or_html_over_the_message_limit_is_413_naming_the_field(
    client: FlaskClient, name: str
) -> None:
    response = client.post(
        "/messages", json={"to": "sip:a@b.com", name: "y" * 1001}, headers=bearer()
    )

    assert response.status_code == 413
    assert response.get_json()["type"] == "urn:ucwa-bridge:problem:payload-too-large"
    assert fields(response) == {name: "too_long"}


def test_message_at_the_limit_is_accepted(client: FlaskClient) -> None:
    response = client.post(
        "/messages", json={"to": "sip:a@b.com", "text": "y" * 1000}, headers=bearer()
    )
    assert response.status_code == 202


def test_unknown_fields_are_named_and_the_list_is_bounded(client: FlaskClient) -> None:
    few = client.post(
        "/messages",
        json={"to": "sip:a@b.com", "text": "x", "cc": "sip:c@d.com", "priority": 1},
        headers=bearer(),
    )
    assert few.status_code == 422
    assert fields(few) == {"cc": "unknown_field", "priority": "unknown_field"}

    many = client.post(
        "/messages",
        json={"to": "sip:a@b.com", "text": "x", **{f"f{n}": n for n in range(300)}},
        headers=bearer(),
    )
    assert many.status_code == 422
    body = many.get_json()
    assert len(body["errors"]) == 20
    assert body["detail"] == "300 field(s) failed validation; the first 20 are listed"


def test_one_recipient_per_message(client: FlaskClient) -> None:
    response = client.post(
        "/messages", json={"to": ["sip:a@b.com", "sip:c@d.com"], "text": "x"}, headers=bearer()
    )
    assert response.status_code == 422
    assert fields(response) == {"to": "string_type"}


@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_deeply_nested_json_is_a_400_not_a_crash(
    make_settings: MakeSettings, redis_client: redis.Redis, opener: str
) -> None:
    client = create_app(make_settings(), redis_client).test_client()  # 64 KiB bodies
    response = post_raw(client, opener * 10_000)

    assert response.status_code == 400
    assert response.mimetype == PROBLEM
    assert response.get_json()["type"] == "urn:ucwa-bridge:problem:malformed-json"


# -- header limits, enforced by gunicorn -------------------------------------------------------


def raw_request(port: int, head: str) -> tuple[int, dict[str, str], Any]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head.encode("latin-1") + b"\r\n")
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head_text, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head_text.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), headers, json.loads(body)


def test_header_limits_are_refused_as_problems(gunicorn_api: int) -> None:
    ok = requests.post(
        f"http://127.0.0.1:{gunicorn_api}/messages",
        json={"to": "sip:a@b.com", "text": "fits"},
        headers=bearer(),
        timeout=10,
    )
    assert ok.status_code == 202

    cases = {
        "request-line-too-long": f"GET /messages/{'x' * 300} HTTP/1.1\r\nHost: a\r\n",
        "headers-too-large": f"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Big: {'y' * 400}\r\n",
    }
    many = "".join(f"X-H{n}: v\r\n" for n in range(20))
    for expected, head in [
        *cases.items(),
        ("headers-too-large", f"GET /healthz HTTP/1.1\r\n{many}"),
    ]:
        status, headers, body = raw_request(gunicorn_api, head)
        assert headers["content-type"] == PROBLEM
        assert body["type"] == f"urn:ucwa-bridge:problem:{expected}"
        assert status == body["status"] == (414 if expected == "request-line-too-long" else 431)
        assert body["errors"][0]["field"] in ("request-line", "headers")


def post_chunked(port: int, text_chars: int) -> requests.Response:
    def chunks() -> Iterator[bytes]:
        yield b'{"to": "sip:a@b.com", "text": "'
        yield b"z" * text_chars
        yield b'"}'

    response = requests.post(
        f"http://127.0.0.1:{port}/messages",
        data=chunks(),
        headers={**bearer(), "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.request.headers["Transfer-Encoding"] == "chunked"
    return response


def test_chunked_body_over_the_limit_is_a_413_problem(gunicorn_api: int) -> None:
    prefix = len(b'{"to": "sip:a@b.com", "text": "' + b'"}')
    assert post_chunked(gunicorn_api, 4096 - prefix).status_code == 202  # exactly at the limit
    response = post_chunked(gunicorn_api, 4097 - prefix)

    assert response.status_code == 413
    assert response.headers["Content-Type"] == PROBLEM
    assert response.json()["type"] == "urn:ucwa-bridge:problem:payload-too-large"


def test_chunked_replay_body_over_the_limit_is_a_413_problem_too(gunicorn_api: int) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"since": "2026-01-01T00:00:00Z", "padding": "'
        yield b"z" * 5000
        yield b'"}'

    response = requests.post(
        f"http://127.0.0.1:{gunicorn_api}/webhooks/replay",
        data=chunks(),
        headers={**bearer(), "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert response.status_code == 413
    assert response.json()["type"] == "urn:ucwa-bridge:problem:payload-too-large"


@pytest.mark.parametrize("html", ["x" + "<" * 600, "&" * 300, "a\u00a0" * 100 + "<>" * 200])
def test_html_that_sanitises_over_the_message_limit_is_422_naming_html(
    client: FlaskClient, redis_client: redis.Redis, html: str
) -> None:
    assert len(html) <= 1000  # within the limit as sent, over it as it would be sent on

    response = client.post("/messages", json={"to": "sip:a@b.com", "html": html}, headers=bearer())

    assert response.status_code == 422, response.get_data(as_text=True)
    assert fields(response) == {"html": "too_long"}
    assert "after sanitising" in response.get_json()["errors"][0]["message"]
    assert not list(redis_client.scan_iter("msg:*"))


HTML_PIECES = [*"<>&\"' ab/=\n", "<b>", "</p>", "<li>", "&amp;", "<br>", "\u00a0"]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(html=st.lists(st.sampled_from(HTML_PIECES), max_size=400).map("".join))
def test_accepted_html_is_what_the_worker_can_send(fuzz_client: FlaskClient, html: str) -> None:
    response = fuzz_client.post(
        "/messages", json={"to": "sip:a@b.com", "html": html}, headers=bearer()
    )

    assert response.status_code in (202, 413, 422), response.get_data(as_text=True)
    if response.status_code == 202:
        sent = response.get_json()["html"]
        assert len(sent) <= 1000 and len(html_to_text(sent)) <= 1000

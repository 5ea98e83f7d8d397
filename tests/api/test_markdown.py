"""Markdown message bodies: rendered to HTML with raw HTML off, then through the html form's
sanitiser, so only the Skype for Business subset is stored, answered and sent."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.outbound.messages import MessageStore
from bridge.ucwa.html_policy import sanitize_outgoing_html
from tests.api.conftest import bearer


def send_markdown(client: FlaskClient, markdown: Any, **extra: Any) -> tuple[int, Any]:
    body = {"to": "sip:alice@contoso.com", "markdown": markdown, **extra}
    response = client.post("/messages", json=body, headers=bearer())
    return response.status_code, response.get_json()


@pytest.mark.parametrize(
    ("markdown", "sent"),
    [
        ("*build* is **green**", "<p><em>build</em> is <strong>green</strong></p>"),
        ("# Deploy\n\ndone", "Deploy\n<p>done</p>"),  # headings keep their text only
        ("run `make test`", "<p>run make test</p>"),
        ("```\nmake test\n```", "make test"),
        ("- one\n- two", "<ul>\n<li>one</li>\n<li>two</li>\n</ul>"),
        ("1. one\n2. two", "<ol>\n<li>one</li>\n<li>two</li>\n</ol>"),
        (
            "[notes](https://example.org/r?a=1&b=2)",
            '<p><a href="https://example.org/r?a=1&amp;b=2">notes</a></p>',
        ),
        ("[call](sip:bob@contoso.com)", None),
    ],
)
def test_markdown_is_sent_as_sanitised_html(
    client: FlaskClient, redis_client: redis.Redis, markdown: str, sent: str | None
) -> None:
    status, body = send_markdown(client, markdown)

    assert status == 202, body
    assert "markdown" not in body and "text" not in body
    if sent is not None:
        assert body["html"] == sent
    assert sanitize_outgoing_html(body["html"]) == body["html"]
    assert MessageStore(redis_client).get(body["id"]).html == body["html"]


@pytest.mark.parametrize(
    "markdown",
    [
        "[x](javascript:alert(1))",
        "[x](JaVaScRiPt:alert(1))",
        "[x](data:text/html,<script>alert(1)</script>)",
        "[x](vbscript:msgbox(1))",
        "[x](/relative/path)",
        "<a href='javascript:alert(1)'>x</a>",
        "see ![img](https://evil.example/pixel.png)",
    ],
)
def test_only_allowed_link_schemes_survive(client: FlaskClient, markdown: str) -> None:
    status, body = send_markdown(client, markdown)

    assert status == 202, body
    html = body["html"].lower()
    assert "<a " not in html and "<img" not in html  # shown as text at most, never a tag


@pytest.mark.parametrize(
    "markdown",
    [
        "<script>alert(1)</script>",
        "hello <b onclick=alert(1)>x</b>",
        "<iframe src=https://evil.example></iframe>",
        "<!-- comment --> text",
    ],
)
def test_raw_html_in_markdown_shows_as_text(client: FlaskClient, markdown: str) -> None:
    status, body = send_markdown(client, markdown)

    assert status == 202, body
    assert "<script" not in body["html"] and "<iframe" not in body["html"]
    assert "onclick" not in body["html"] or "&lt;b onclick" in body["html"]
    assert "&lt;" in body["html"]


def test_exactly_one_body_form(client: FlaskClient) -> None:
    status, body = send_markdown(client, "*a*", text="a")
    assert status == 422
    assert [e["field"] for e in body["errors"]] == ["markdown"]
    assert body["errors"][0]["code"] == "conflict"

    response = client.post("/messages", json={"to": "sip:a@b.com"}, headers=bearer())
    assert response.status_code == 422
    assert response.get_json()["errors"][0]["message"] == (
        "one of text, html or markdown is required"
    )


@pytest.mark.parametrize(
    ("markdown", "code"),
    [("   ", "blank"), ("<p>", None), ("![]()", "blank"), ("a\x1bb", "invalid_characters")],
)
def test_markdown_that_leaves_nothing_to_send_is_refused(
    client: FlaskClient, markdown: str, code: str | None
) -> None:
    status, body = send_markdown(client, markdown)

    if code is None:
        assert status == 202  # the tag shows as text
        return
    assert status == 422, body
    assert body["errors"][0] == {**body["errors"][0], "field": "markdown", "code": code}


def test_the_limit_applies_to_the_html_sent(client: FlaskClient) -> None:
    # 1000 characters allowed: 400 "<" become 1600 characters of "&lt;".
    status, body = send_markdown(client, "<" * 400)
    assert status == 422, body
    assert body["errors"][0]["field"] == "markdown"
    assert body["errors"][0]["code"] == "too_long"

    status, body = send_markdown(client, "a" * 1001)
    assert status == 413
    assert body["errors"][0]["field"] == "markdown"


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(list("*_`#->[]()!<>&;:/\\\n |=~+.\"'")),
            st.sampled_from(["javascript:", "<script>", "https://x.org", "&#27;", "&lt;", "\t"]),
            st.characters(codec="utf-8"),
        ),
        max_size=120,
    ).map("".join)
)
def test_any_markdown_is_sent_sanitised_or_refused_naming_markdown(
    fuzz_client: FlaskClient, markdown: str
) -> None:
    status, body = send_markdown(fuzz_client, markdown)

    if status == 202:
        assert sanitize_outgoing_html(body["html"]) == body["html"]
        assert "<script" not in body["html"].lower()
        return
    assert status in (400, 413, 422), body
    assert body["type"].startswith("urn:ucwa-bridge:problem:")
    assert "markdown" in {e["field"] for e in body.get("errors", [])}, body

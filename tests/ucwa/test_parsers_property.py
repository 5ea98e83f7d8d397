"""Property tests for every parser of server input: whatever UCWA sends, the only outcomes are a
parsed value or an error from the ``UcwaError`` tree (never KeyError, TypeError, RecursionError).

Derandomized and without an example database, so CI runs the same examples every time.
"""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bridge.ucwa.auth import Credentials, MsRtcOAuth, drive, token_from_response
from bridge.ucwa.challenge import MAX_CHALLENGE_CHARS, parse_challenge
from bridge.ucwa.datauri import MAX_DATA_URI_CHARS, decode_data_uri, html_to_text
from bridge.ucwa.discovery import Discovery
from bridge.ucwa.errors import (
    InvalidDataUri,
    ProtocolViolation,
    UcwaError,
    error_from_response,
    parse_retry_after,
)
from bridge.ucwa.events import parse_events
from bridge.ucwa.failures import classify_failure
from bridge.ucwa.links import (
    link,
    links,
    parse_ms_date,
    query_param,
    resolve,
    sip_uri_from_href,
    with_query,
)
from bridge.ucwa.messages import HttpRequest, HttpResponse
from bridge.ucwa.notices import IncomingInvitation, IncomingMessage, interpret
from bridge.ucwa.trust import TrustPolicy

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
FAST = settings(
    max_examples=80,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Strings servers really send, and strings that broke naive parsers.
HOSTILE = [
    "",
    " ",
    "\x00",
    "http://[",
    "http://[::1",
    "https://[fe80::1%25eth0]/x",
    "http://host:99999/",
    "http://host:-1/",
    "//evil.example/steal",
    "https://evil.example/ucwa",
    "javascript:alert(1)",
    "data:",
    "data:,",
    "data:text/plain;base64,",
    "data:text/plain;base64,!!!!",
    "data:text/plain;charset=rot13,abc",
    "data:text/plain;charset=base64,abc",
    "data:text/plain;charset=idna,%00%00",
    "data:text/plain;charset=utf-16,%ff",
    "data:text/html,<script>alert(1)</script>",
    "data:text/html,<p>" + "<b>" * 200,
    "/Date(99999999999999999999999)/",
    "/Date(-99999999999999999999999)/",
    "/Date(1364327898968)/",
    "1e400",
    "-1",
    "NaN",
    "inf",
    "99999999999999999999999",
    "Tue, 99 Foo 2024 99:99:99 GMT",
    "Mon, 01 Jan 0001 00:00:00 GMT",
    "Fri, 31 Dec 9999 23:59:59 GMT",
    'MsRtcOAuth href="',
    "MsRtcOAuth href=",
    "MsRtcOAuth grant_type=,,,, href=x",
    'MsRtcOAuth href="https://evil.example/token",grant_type="password"',
    "Bearer realm=x, MsRtcOAuth",
    "/people/" + "%" * 10 + "@x",
    ".../participants/@",
    "\ud800",
]

hostile_text = st.one_of(st.text(max_size=200), st.sampled_from(HOSTILE))

UCWA_KEYS = [
    "_links",
    "_embedded",
    "sender",
    "events",
    "link",
    "in",
    "href",
    "rel",
    "title",
    "type",
    "status",
    "reason",
    "code",
    "subcode",
    "message",
    "direction",
    "timeStamp",
    "self",
    "next",
    "resync",
    "resume",
    "messagingInvitation",
    "message",
    "messaging",
    "participant",
    "conversation",
    "from",
    "accept",
    "decline",
    "plainMessage",
    "htmlMessage",
    "negotiatedMessageFormats",
    "uri",
    "name",
    "state",
    "operationId",
    "threadId",
    "acceptedByParticipant",
    "to",
    "contact",
    "typingParticipants",
    "participants",
    "access_token",
    "expires_in",
    "error",
    "error_description",
    "applications",
    "user",
    "redirect",
]
STRING_VALUES = [
    "Incoming",
    "Outgoing",
    "started",
    "updated",
    "completed",
    "added",
    "deleted",
    "Success",
    "Failure",
    "conversation",
    "communication",
    "messagingInvitation",
    "message",
    "messaging",
    "participant",
    "typingParticipants",
    *HOSTILE,
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(STRING_VALUES),
)
ucwa_json = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(UCWA_KEYS), st.text(max_size=8)), children, max_size=6
        ),
    ),
    max_leaves=40,
)


def body_text(value: Any) -> str:
    return json.dumps(value, allow_nan=True)


@FAST
@given(ucwa_json)
def test_event_batches_parse_or_raise_protocol_violation(data: Any) -> None:
    try:
        batch = parse_events(data)
    except ProtocolViolation:
        return
    with contextlib.suppress(ProtocolViolation):
        batch.cursor()
    for notice in interpret(batch, {"x": "sip:a@b"}):
        uris: list[str | None] = []
        if isinstance(notice, IncomingMessage):
            uris = [notice.plain_data_uri, notice.html_data_uri]
        elif isinstance(notice, IncomingInvitation):
            uris = [notice.message_data_uri]
        for uri in uris:
            if uri is not None:
                with contextlib.suppress(InvalidDataUri):
                    decode_data_uri(uri).plain_text()


@FAST
@given(st.one_of(st.text(max_size=300), ucwa_json.map(body_text)))
def test_response_json_never_raises(text: str) -> None:
    HttpResponse(200, (), text).json()


def test_deeply_nested_json_is_not_json_rather_than_a_crash() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    assert HttpResponse(200, (), deep).json() is None
    with pytest.raises(ProtocolViolation):
        parse_events(HttpResponse(200, (), deep).json())


@FAST
@given(st.one_of(hostile_text, st.builds(lambda s: "data:" + s, hostile_text)))
@example("data:text/plain;charset=rot13,abc")
@example("data:text/plain;charset=idna,%00%00")
def test_data_uris_decode_or_raise_invalid_data_uri(uri: str) -> None:
    try:
        content = decode_data_uri(uri)
    except InvalidDataUri:
        return
    assert isinstance(content.plain_text(), str)


@FAST
@given(
    mime=st.sampled_from(["text/plain", "text/html", "", "TEXT/PLAIN", "application/x"]),
    params=st.lists(
        st.one_of(
            st.sampled_from(["base64", "charset=utf-8", "charset=utf-16", "charset=latin1"]),
            st.builds(lambda s: "charset=" + s, st.text(max_size=12)),
            st.text(max_size=10),
        ),
        max_size=3,
    ),
    payload=st.one_of(st.text(max_size=100), st.binary(max_size=60).map(lambda b: b.hex())),
)
def test_structured_data_uris_decode_or_raise(mime: str, params: list[str], payload: str) -> None:
    uri = "data:" + ";".join([mime, *params]) + "," + payload
    with contextlib.suppress(InvalidDataUri):
        decode_data_uri(uri).plain_text()


def test_oversized_data_uri_is_refused_quickly() -> None:
    with pytest.raises(InvalidDataUri, match="too large"):
        decode_data_uri("data:text/plain," + "a" * (MAX_DATA_URI_CHARS + 1))


@FAST
@given(st.text(max_size=400))
def test_html_to_text_never_raises(html: str) -> None:
    assert isinstance(html_to_text(html), str)


@FAST
@given(
    st.one_of(
        hostile_text,
        st.lists(hostile_text, max_size=4),
        st.builds(
            lambda a, b, c: f"MsRtcOAuth {a}href={b},grant_type={c}",
            hostile_text,
            hostile_text,
            hostile_text,
        ),
    )
)
def test_challenges_parse_or_are_absent(values: str | list[str]) -> None:
    challenge = parse_challenge(values)
    if challenge is not None:
        assert challenge.href and all(challenge.grant_types)


def test_huge_challenge_header_is_ignored() -> None:
    header = 'MsRtcOAuth href="https://a/t",grant_type=' + ", a" * MAX_CHALLENGE_CHARS
    assert parse_challenge(header) is None


@FAST
@given(
    status=st.integers(min_value=100, max_value=999),
    headers=st.dictionaries(
        st.sampled_from(["Retry-After", "X-Ms-diagnostics", "Warning", "Content-Type"]),
        hostile_text,
    ),
    body=st.one_of(hostile_text, ucwa_json.map(body_text)),
)
def test_error_bodies_always_map_to_an_error_in_the_tree(
    status: int, headers: dict[str, str], body: str
) -> None:
    error = error_from_response(status, headers, body, "GET", "https://pool/x", NOW)
    assert isinstance(error, UcwaError)
    assert isinstance(str(error), str) and isinstance(repr(error), str)


@FAST
@given(hostile_text)
@example("inf")
@example("1e400")
@example("99999999999999")
def test_retry_after_is_a_time_or_none(value: str) -> None:
    when = parse_retry_after(value, NOW)
    assert when is None or when >= NOW


@FAST
@given(status=st.sampled_from([200, 400, 401, 500]), body=ucwa_json.map(body_text))
@example(status=200, body='{"access_token": "cwt=x", "expires_in": 1e308}')
@example(status=200, body='{"access_token": "cwt=x", "expires_in": Infinity}')
@example(status=200, body='{"access_token": "cwt=x", "expires_in": -5}')
@example(status=200, body='{"access_token": ["cwt=x"]}')
def test_token_responses_give_a_token_or_an_error(status: int, body: str) -> None:
    try:
        token = token_from_response(HttpResponse(status, (), body), "https://p/t", "p", NOW)
    except UcwaError:
        return
    assert token.access_token and token.expires_at >= NOW


@FAST
@given(
    base=st.sampled_from(["https://pool.contoso.com/ucwa/", "http://[::1]:80/"]), href=hostile_text
)
@example(base="https://pool.contoso.com/ucwa/", href="http://[::1")
@example(base="https://pool.contoso.com/ucwa/", href="http://host:99999/")
def test_hrefs_resolve_or_raise_protocol_violation(base: str, href: str) -> None:
    try:
        url = resolve(base, href)
    except ProtocolViolation:
        return
    assert isinstance(url, str)
    with contextlib.suppress(ProtocolViolation):
        assert isinstance(with_query(url, {"timeout": 180, "x": None}), str)
    query_param(url, "timeout")
    sip_uri_from_href(href)
    TrustPolicy.for_session(base).allows(url)


@FAST
@given(st.one_of(hostile_text, ucwa_json))
@example("/Date(99999999999999999999999)/")
def test_ms_dates_are_a_time_or_none(value: Any) -> None:
    parse_ms_date(value)


@FAST
@given(ucwa_json, st.sampled_from(["self", "next", "applications", "user", "href"]))
def test_link_helpers_never_raise(resource: Any, rel: str) -> None:
    link(resource, rel)
    links(resource, rel)


@FAST
@given(ucwa_json, st.one_of(st.none(), hostile_text))
def test_failure_reasons_classify(reason: Any, state: str | None) -> None:
    from bridge.ucwa.events import Reason

    classify_failure(Reason.parse(reason), state)


response_strategy = st.builds(
    HttpResponse,
    status=st.sampled_from([200, 200, 301, 302, 307, 401, 404, 500]),
    headers=st.dictionaries(
        st.sampled_from(["Location", "WWW-Authenticate", "Content-Type"]),
        st.one_of(
            hostile_text,
            st.sampled_from(
                [
                    "https://lyncweb.contoso.com/next",
                    "https://evil.example/x",
                    'MsRtcOAuth href="https://lyncweb.contoso.com/t",grant_type="password"',
                ]
            ),
        ),
    ).map(lambda d: tuple(d.items())),
    text=st.one_of(
        ucwa_json.map(body_text),
        st.sampled_from(
            [
                '{"_links":{"user":{"href":"https://lyncweb.contoso.com/u"}}}',
                '{"_links":{"redirect":{"href":"https://evil.example/r"}}}',
                '{"_links":{"applications":{"href":"https://lyncweb.contoso.com/apps"}}}',
                '{"access_token":"cwt=x","expires_in":1e308}',
            ]
        ),
    ),
)


@FAST
@given(st.lists(response_strategy, min_size=1, max_size=12))
def test_discovery_ends_with_a_result_or_an_error_for_any_server(
    responses: list[HttpResponse],
) -> None:
    auth = MsRtcOAuth(Credentials("bot@contoso.com", "pw"), clock=lambda: NOW)
    auth.trust = TrustPolicy.for_discovery("https://lyncdiscover.contoso.com", ["contoso.com"])
    queue = list(responses)
    sent: list[HttpRequest] = []

    def send(request: HttpRequest) -> HttpResponse:
        sent.append(request)
        return queue.pop(0) if queue else HttpResponse(404, (), "")

    flow = Discovery(
        "sip:bot@contoso.com", auth, start_urls=["https://lyncdiscover.contoso.com"]
    ).flow()
    try:
        result = drive(flow, send)
    except UcwaError:
        pass
    else:
        assert result.applications_url.startswith("https://")
    assert len(sent) <= 8 * 3 + 1  # hop limit: three requests per hop at most
    for request in sent:  # neither the password nor a token leaves the trusted domain
        if request.form is not None or request.header("Authorization"):
            assert request.host.endswith("contoso.com")

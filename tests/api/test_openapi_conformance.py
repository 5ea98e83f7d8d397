"""Schemathesis against the real app and a real Redis: the OpenAPI document describes reality.

Every documented operation is fuzzed with valid and invalid requests (a bounded number each);
no answer may be a 5xx, every answer must match the document (status, headers, content type,
body schema), and every 4xx must be an RFC 9457 problem.
"""

from __future__ import annotations

import json
import time

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case, CheckContext, GenerationMode, Response
from schemathesis.config import SchemathesisConfig

from bridge.api import create_app
from bridge.api.markdown import markdown_to_html
from bridge.api.openapi import build_document
from bridge.api.problems import PROBLEM_MEDIA_TYPE, TYPE_PREFIX
from bridge.api.schemas import SEND_AT_PAST_S, parse_rfc3339
from bridge.outbound.message_index import SCHEDULE_HORIZON_S
from bridge.ucwa.datauri import html_to_text
from bridge.ucwa.html_policy import sanitize_outgoing_html
from bridge.ucwa.text import unencodable
from tests.api.conftest import MakeSettings, bearer

REJECTIONS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "429"]
EXAMPLES_PER_OPERATION = 60
# A body over the size or message limit is refused with 413, which is a rejection too.
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {"negative_data_rejection": {"expected-statuses": REJECTIONS}},
        # Unknown query parameters are ignored, as HTTP APIs commonly do.
        "generation": {"allow-extra-parameters": False},
    }
)
OPERATIONS = [
    (method.upper(), path)
    for path, item in build_document(1000)["paths"].items()
    for method in item
]


def rich_body_shows_something(case: Case) -> bool:
    """HTML with nothing visible once sanitised is refused (422), which no schema can say; so
    is HTML that sanitises over the limit or into a control character ("&#27;"). Markdown is
    rendered to HTML and goes the same way ("+" is an empty list: nothing to show)."""
    body = case.body if isinstance(case.body, dict) else {}
    html, markdown = body.get("html"), body.get("markdown")
    if isinstance(markdown, str) and not isinstance(html, str):
        html = markdown_to_html(markdown)
    if not isinstance(html, str):
        return True
    clean = sanitize_outgoing_html(html)
    text = html_to_text(clean)
    return bool(text) and unencodable(clean) is None and max(len(clean), len(text)) <= 1000


def send_at_in_window(case: Case) -> bool:
    """send_at is refused more than a minute in the past or more than 7 days ahead: a window
    relative to now, which no schema can say."""
    send_at = case.body.get("send_at") if isinstance(case.body, dict) else None
    if not isinstance(send_at, str):
        return True
    try:
        moment = parse_rfc3339(send_at)
    except ValueError:
        return True  # not a date-time: the schema says so, and it is refused
    return time.time() - SEND_AT_PAST_S < moment < time.time() + SCHEDULE_HORIZON_S - 60


def errors_are_problems(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Every 4xx and 5xx answer is application/problem+json with a stable type and the status."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.split(";")[0].strip() == PROBLEM_MEDIA_TYPE, (
        f"{response.status_code} answered as {content_type!r}"
    )
    body = json.loads(response.content)
    assert body["type"].startswith(TYPE_PREFIX), body
    assert body["status"] == response.status_code, body
    return None


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_every_answer_matches_the_document(
    method: str, path: str, make_settings: MakeSettings, redis_client: redis.Redis
) -> None:
    app = create_app(make_settings(max_body_bytes="4096", max_message_chars="1000"), redis_client)
    operation = schemathesis.openapi.from_wsgi("/openapi.json", app, config=CONFIG)[path][method]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE)
        .filter(rich_body_shows_something)
        .filter(send_at_in_window),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @given(case=cases)
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Case) -> None:
        redis_client.flushdb()  # cases are independent: no Idempotency-Key or allowance carries
        case.call_and_validate(headers=bearer(), additional_checks=[errors_are_problems])

    check()

"""The scope rule: HEAD needs exactly what GET needs, on every route; reading needs ``read``,
acting needs ``send``; OPTIONS only lists the methods, to anyone."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from bridge.api.app import scope_for
from bridge.config.settings import Scope
from tests.api.conftest import READ_ONLY_KEY, SEND_AND_READ_KEY, SEND_ONLY_KEY, bearer

CALLERS = {
    "send and read": bearer(SEND_AND_READ_KEY),
    "send only": bearer(SEND_ONLY_KEY),
    "read only": bearer(READ_ONLY_KEY),
    "wrong key": bearer("not-a-configured-key-0000"),
    "no key": {},
}
ARGUMENTS = {"message_id": "msg_" + "0" * 32, "delivery_id": "dlv_0a1b2c3d4e5f60718293a4b5"}


def readable_urls(app: Flask) -> list[str]:
    urls = []
    for rule in app.url_map.iter_rules():
        if rule.methods and "GET" in rule.methods:
            args = {name: ARGUMENTS.get(name, "x") for name in rule.arguments}
            urls.append(rule.build(args, append_unknown=False)[1])  # type: ignore[index]
    return urls


def test_every_route_that_allows_get_is_listed(app: Flask) -> None:
    urls = readable_urls(app)
    assert "/webhooks/deliveries" in urls and "/messages/" + ARGUMENTS["message_id"] in urls
    assert len(urls) >= 8


@pytest.mark.parametrize("caller", list(CALLERS))
def test_head_answers_every_caller_as_get_does_on_every_route(
    app: Flask, client: FlaskClient, caller: str
) -> None:
    for url in readable_urls(app):
        get = client.get(url, headers=CALLERS[caller])
        head = client.head(url, headers=CALLERS[caller])
        options = client.options(url, headers=CALLERS[caller])

        assert head.status_code == get.status_code, (url, caller)
        assert head.get_data() == b""
        assert options.status_code == 200 and "GET" in options.headers["Allow"], url


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_the_delivery_log_is_read_with_the_read_scope(client: FlaskClient, method: str) -> None:
    url = "/webhooks/deliveries"
    assert client.open(url, method=method, headers=bearer(READ_ONLY_KEY)).status_code == 200
    assert client.open(url, method=method, headers=bearer(SEND_ONLY_KEY)).status_code == 403


def test_acting_needs_send() -> None:
    assert {m: scope_for(m) for m in ["GET", "head", "POST", "PUT", "DELETE"]} == {
        "GET": Scope.READ,
        "head": Scope.READ,
        "POST": Scope.SEND,
        "PUT": Scope.SEND,
        "DELETE": Scope.SEND,
    }

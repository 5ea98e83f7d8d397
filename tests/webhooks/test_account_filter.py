"""Webhook endpoints that receive only some accounts' events (``accounts`` in their config)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import redis

from bridge.webhooks.endpoints import load_endpoints
from bridge.webhooks.errors import WebhookConfigError
from bridge.webhooks.log import delivery_id_for
from bridge.webhooks.outbox import new_event, stage_event
from tests.webhooks.harness import new_secret


def endpoints(**accounts: list[str] | None) -> str:
    return json.dumps(
        [
            {"id": name, "url": f"https://{name}.example/hook", "secrets": [new_secret()]}
            | ({"accounts": value} if value is not None else {})
            for name, value in accounts.items()
        ]
    )


@pytest.mark.parametrize(
    ("event_type", "data"),
    [
        ("message.received", {"text": "hi"}),
        ("message.delivered", {"status": "delivered"}),
        ("conversation.ended", {"conversation": "conv_" + "0" * 24}),
    ],
)
def test_an_endpoint_gets_only_the_events_of_its_accounts(
    redis_client: redis.Redis, event_type: str, data: dict[str, str]
) -> None:
    configured = load_endpoints(
        {"BRIDGE_WEBHOOKS": endpoints(everything=None, pager=["alerts"], both=["bot", "alerts"])}
    )
    configured = [
        type(e)(e.id, e.url, e.secrets, frozenset({event_type}), accounts=e.accounts)
        for e in configured
    ]
    expected = {"bot": {"everything", "both"}, "alerts": {"everything", "pager", "both"},
                "other": {"everything"}}  # fmt: skip
    for account, receivers in expected.items():
        event = new_event(event_type, {**data, "account": account}, datetime.now(UTC))
        with redis_client.pipeline() as pipe:
            pipe.multi()
            ids = stage_event(pipe, event, configured)
            pipe.execute()
        assert set(ids) == {delivery_id_for(str(event["id"]), name) for name in receivers}


def test_the_accounts_of_an_endpoint_are_checked_and_shown() -> None:
    (endpoint,) = load_endpoints({"BRIDGE_WEBHOOKS": endpoints(pager=["alerts"])})
    assert endpoint.public_view()["accounts"] == ["alerts"]
    assert endpoint.wants("message.received", "alerts")
    assert not endpoint.wants("message.received", "bot")
    for bad in ([], ["Bot"], "alerts", [7]):
        with pytest.raises(WebhookConfigError, match=r"\[0\]\.accounts: expected a non-empty"):
            load_endpoints({"BRIDGE_WEBHOOKS": endpoints(pager=bad)})  # type: ignore[arg-type]

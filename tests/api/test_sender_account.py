"""Choosing the sender: ``from`` on POST /messages and /broadcasts, keys bound to accounts, a
reply from its conversation's account, and one line per account and person."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from bridge.api import create_app
from bridge.outbound.messages import MessageStore, RecipientQueue
from bridge.session.conversations import Conversation, ConversationRegistry
from tests.api.conftest import MakeSettings

EVERY = "key-for-every-account-0001"
ALERTS_ONLY = "key-for-alerts-only-00001"
ALERTS_FIRST = "key-alerts-then-bot-00001"
ACCOUNTS = [
    {"id": "bot", "username": "bot@contoso.com", "default": True},
    {"id": "alerts", "username": "alerts@contoso.com"},
]
PERSON = "sip:alice@contoso.com"


@pytest.fixture()
def client(make_settings: MakeSettings, redis_client: redis.Redis) -> FlaskClient:
    settings = make_settings(
        accounts=json.dumps(ACCOUNTS),
        api_keys=f"{EVERY},{ALERTS_ONLY}:send,read@alerts,{ALERTS_FIRST}@alerts|bot",
        rate_limit="off",
    )
    return create_app(settings, redis_client).test_client()


def send(client: FlaskClient, body: dict[str, Any], key: str = EVERY, path: str = "/messages"):  # type: ignore[no-untyped-def]
    return client.post(path, json=body, headers={"Authorization": f"Bearer {key}"})


def test_without_from_a_message_goes_from_the_default_account(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    answer = send(client, {"to": PERSON, "text": "hi"})
    assert answer.status_code == 202, answer.get_json()
    assert answer.get_json()["from"] == "bot"
    record = MessageStore(redis_client).get(answer.get_json()["id"])
    assert record.account == "bot" and record.recipient == f"bot|{PERSON}"


def test_from_names_the_account_and_each_account_has_its_own_line_per_person(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    first = send(client, {"to": PERSON, "text": "from the bot"}).get_json()["id"]
    second = send(client, {"to": PERSON.upper(), "text": "alert", "from": "alerts"}).get_json()
    assert second["from"] == "alerts"
    third = send(client, {"to": PERSON, "text": "again", "from": "bot"}).get_json()["id"]
    fifo = RecipientQueue(redis_client)
    # Each account is a sender of its own: its messages to a person keep their order among
    # themselves and never wait behind another account's.
    assert fifo.pending(f"bot|{PERSON}") == [first, third]
    assert fifo.pending(f"alerts|{PERSON}") == [second["id"]]
    listed = client.get(
        f"/messages?to={PERSON}", headers={"Authorization": f"Bearer {EVERY}"}
    ).get_json()
    assert {item["from"] for item in listed["items"]} == {"bot", "alerts"}


@pytest.mark.parametrize(
    ("key", "body", "code"),
    [
        (EVERY, {"from": "nobody"}, "unknown_account"),
        (ALERTS_ONLY, {"from": "bot"}, "account_not_allowed"),
        (ALERTS_ONLY, {"from": "nobody"}, "unknown_account"),
    ],
)
def test_an_account_the_key_may_not_use_is_a_403_naming_from(
    client: FlaskClient, redis_client: redis.Redis, key: str, body: dict[str, str], code: str
) -> None:
    for path, recipients in (("/messages", PERSON), ("/broadcasts", [PERSON])):
        answer = send(client, {"to": recipients, "text": "hi", **body}, key, path)
        assert answer.status_code == 403, answer.get_json()
        problem = answer.get_json()
        assert problem["type"] == "urn:ucwa-bridge:problem:account-forbidden"
        assert problem["errors"][0]["field"] == "from" and problem["errors"][0]["code"] == code
    assert not redis_client.keys("msg:*")


def test_a_bound_key_sends_from_its_first_account_by_default(client: FlaskClient) -> None:
    assert send(client, {"to": PERSON, "text": "x"}, ALERTS_ONLY).get_json()["from"] == "alerts"
    assert send(client, {"to": PERSON, "text": "x"}, ALERTS_FIRST).get_json()["from"] == "alerts"
    answer = send(client, {"to": PERSON, "text": "x", "from": "bot"}, ALERTS_FIRST)
    assert answer.status_code == 202 and answer.get_json()["from"] == "bot"


@pytest.mark.parametrize("value", ["Bot", "", "bot alerts", 7, "x" * 33])
def test_a_malformed_from_is_a_422_naming_it(client: FlaskClient, value: object) -> None:
    answer = send(client, {"to": PERSON, "text": "x", "from": value})
    assert answer.status_code == 422
    assert [e["field"] for e in answer.get_json()["errors"]] == ["from"]


def test_a_broadcast_goes_from_the_account_it_names(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    answer = send(client, {"to": [PERSON, "sip:bob@contoso.com"], "text": "x", "from": "alerts"},
                  path="/broadcasts")  # fmt: skip
    assert answer.status_code == 202, answer.get_json()
    store = MessageStore(redis_client)
    records = [store.get(m["id"]) for m in answer.get_json()["messages"]]
    assert {r.account for r in records} == {"alerts"}
    assert {r.recipient for r in records} == {f"alerts|{PERSON}", "alerts|sip:bob@contoso.com"}


def _conversation(redis_client: redis.Redis, account_id: str, key: str) -> str:
    registry = ConversationRegistry(redis_client, key, account_id)
    href = f"/ucwa/oauth/v1/applications/1/communication/conversations/{account_id}"
    conv = Conversation(
        id=registry.id_for(href),
        href=href,
        generation=1,
        remote=PERSON,
        state="Conversation",
        messaging_state="Connected",
        created_at=time.time(),
        last_activity=time.time(),
    )
    with redis_client.pipeline() as pipe:
        registry.save(conv, pipe)
        pipe.execute()
    return conv.id


def test_a_reply_goes_from_the_conversations_account(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    conv = _conversation(redis_client, "alerts", "alerts@contoso.com")
    answer = send(client, {"conversation": conv, "text": "reply"})
    assert answer.status_code == 202, answer.get_json()
    record = MessageStore(redis_client).get(answer.get_json()["id"])
    assert record.account == "alerts" and record.recipient == f"alerts|{PERSON}"

    mismatch = send(client, {"conversation": conv, "text": "reply", "from": "bot"})
    assert mismatch.status_code == 422
    assert mismatch.get_json()["errors"][0] == {
        "field": "from",
        "message": "a reply goes from the conversation's account, alerts",
        "code": "account_mismatch",
    }


def test_each_account_knows_only_its_own_conversations_with_a_person(
    redis_client: redis.Redis,
) -> None:
    _conversation(redis_client, "alerts", "alerts@contoso.com")
    bot = ConversationRegistry(redis_client, "bot@contoso.com", "bot")
    alerts = ConversationRegistry(redis_client, "alerts@contoso.com", "alerts")
    assert bot.by_remote(PERSON) is None  # never the other account's application's
    found = alerts.by_remote(PERSON)
    assert found is not None and found.account == "alerts"
    assert [c.id for c in alerts.active()] == [found.id] and bot.active() == []


def test_a_reply_from_an_account_is_listed_under_its_person(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    conv = _conversation(redis_client, "alerts", "alerts@contoso.com")
    sent = send(client, {"conversation": conv, "text": "reply"}).get_json()["id"]
    listed = client.get(
        f"/messages?to={PERSON}", headers={"Authorization": f"Bearer {EVERY}"}
    ).get_json()
    assert [item["id"] for item in listed["items"]] == [sent]


def test_a_sip_uri_with_a_bar_is_a_person_of_the_default_account() -> None:
    from bridge.outbound.message_index import line_account, line_person
    from bridge.outbound.messages import recipient_key

    odd = "sip:a|b@contoso.com"
    assert line_account(recipient_key(odd, None)) == "default"
    assert line_person(recipient_key(odd, None)) == odd
    assert line_account(recipient_key(odd, None, "alerts")) == "alerts"
    assert line_person(recipient_key(odd, None, "alerts")) == odd

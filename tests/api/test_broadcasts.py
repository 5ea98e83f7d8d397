"""POST /broadcasts and GET /broadcasts/<id> against real Redis: one message per distinct
recipient, each in its line with a send job; all of it stored or none (Redis full, read-only,
a lost Idempotency-Key claim, a refusing rate limit); counts per status from the indexes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from rq import Queue

from bridge.api import create_app
from bridge.config.embedded_redis import free_port
from bridge.outbound.intake import SEND_QUEUE
from bridge.outbound.messages import MessageStatus, MessageStore, RecipientQueue
from tests.api.conftest import READ_ONLY_KEY, SEND_ONLY_KEY, MakeSettings, bearer, get_ok

PEOPLE = [f"sip:user{n}@contoso.com" for n in range(5)]


def post(client: FlaskClient, body: dict[str, Any], **headers: str) -> Any:
    return client.post("/broadcasts", json=body, headers={**bearer(), **headers})


def stored_keys(conn: redis.Redis) -> list[bytes]:
    """What a broadcast writes, less what the rate limiter and RQ's queue registry keep."""
    return sorted(
        k for k in conn.keys("*") if not k.startswith((b"ratelimit:", b"idem:", b"rq:queues"))
    )


def test_one_message_per_distinct_recipient_each_in_its_line(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    earlier = client.post("/messages", json={"to": PEOPLE[0], "text": "first"}, headers=bearer())
    to = [PEOPLE[0], PEOPLE[1].upper(), PEOPLE[1], PEOPLE[2]]

    answer = post(client, {"to": to, "markdown": "**deploy** done", "subject": "CI"})

    assert answer.status_code == 202, answer.get_json()
    body = answer.get_json()
    assert answer.headers["Location"] == f"/broadcasts/{body['id']}"
    assert [m["to"] for m in body["messages"]] == [PEOPLE[0], PEOPLE[1].upper(), PEOPLE[2]]
    assert body["total"] == 3 and body["counts"]["queued"] == 3
    assert sum(body["counts"].values()) == 3
    ids = [m["id"] for m in body["messages"]]
    for message_id in ids:
        record = get_ok(client, f"/messages/{message_id}")
        assert record["broadcast"] == body["id"] and record["subject"] == "CI"
        assert record["html"] == "<p><strong>deploy</strong> done</p>"
    fifo = RecipientQueue(redis_client)
    assert fifo.pending(PEOPLE[0]) == [earlier.get_json()["id"], ids[0]]  # behind the earlier
    assert fifo.pending(PEOPLE[1]) == [ids[1]] and fifo.pending(PEOPLE[2]) == [ids[2]]
    assert Queue(SEND_QUEUE, connection=redis_client).count == 4
    assert get_ok(client, f"/broadcasts/{body['id']}") == body
    listed = get_ok(client, f"/messages?broadcast={body['id']}")["items"]
    assert sorted(m["id"] for m in listed) == sorted(ids)


def test_counts_follow_the_messages(client: FlaskClient, redis_client: redis.Redis) -> None:
    body = post(client, {"to": PEOPLE[:4], "text": "hi"}).get_json()
    ids = [m["id"] for m in body["messages"]]
    store = MessageStore(redis_client)
    store.transition(ids[0], MessageStatus.SENDING)
    store.transition(ids[0], MessageStatus.DELIVERED)
    store.transition(ids[1], MessageStatus.FAILED)
    client.post(f"/messages/{ids[2]}/cancel", headers=bearer())

    counts = get_ok(client, f"/broadcasts/{body['id']}")["counts"]

    assert {k: v for k, v in counts.items() if v} == {
        "delivered": 1,
        "failed": 1,
        "cancelled": 1,
        "queued": 1,
    }
    failed = get_ok(client, f"/messages?broadcast={body['id']}&status=failed")["items"]
    assert [m["id"] for m in failed] == [ids[1]]


def test_a_scheduled_broadcast(client: FlaskClient) -> None:
    send_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 600))
    body = post(client, {"to": PEOPLE[:2], "text": "later", "send_at": send_at}).get_json()
    assert body["counts"]["scheduled"] == 2 and body["send_at"].startswith(send_at[:19])
    assert get_ok(client, f"/messages/{body['messages'][0]['id']}")["status"] == "scheduled"


@pytest.fixture()
def faults(redis_client: redis.Redis) -> Iterator[dict[str, Callable[[], None]]]:
    """Redis refusing writes, each way it does: full, and read-only (a replica)."""
    undo: list[Callable[[], None]] = []

    def full() -> None:
        redis_client.config_set("maxmemory", "1")
        undo.append(lambda: redis_client.config_set("maxmemory", "0"))

    def read_only() -> None:
        redis_client.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
        undo.append(lambda: redis_client.execute_command("REPLICAOF", "NO", "ONE"))

    try:
        yield {"full": full, "read-only": read_only}
    finally:
        for step in undo:
            step()


@pytest.mark.parametrize("fault", ["full", "read-only"])
@pytest.mark.parametrize("idempotent", [False, True], ids=["plain", "idempotency-key"])
def test_a_broadcast_redis_refuses_stores_nothing(
    client: FlaskClient,
    redis_client: redis.Redis,
    faults: dict[str, Callable[[], None]],
    fault: str,
    idempotent: bool,
) -> None:
    before = stored_keys(redis_client)
    faults[fault]()
    headers = {"Idempotency-Key": "bc-1"} if idempotent else {}

    answer = post(client, {"to": PEOPLE, "text": "hi"}, **headers)

    assert answer.status_code == 503, answer.get_json()
    assert stored_keys(redis_client) == before


def test_a_lost_idempotency_claim_stores_nothing(
    client: FlaskClient, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim expires (or is taken over) between the claim and the intake: 409, nothing."""
    from bridge.api.idempotency import IdempotencyStore

    real_begin = IdempotencyStore.begin

    def begin_then_lose(self: IdempotencyStore, *args: Any) -> Any:
        claim = real_begin(self, *args)
        redis_client.delete(claim.key)
        return claim

    monkeypatch.setattr(IdempotencyStore, "begin", begin_then_lose)
    before = stored_keys(redis_client)
    answer = post(client, {"to": PEOPLE, "text": "hi"}, **{"Idempotency-Key": "bc-2"})
    assert answer.status_code == 409
    assert stored_keys(redis_client) == before


def test_an_idempotency_key_replays_the_first_answer(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    body = {"to": PEOPLE[:3], "text": "once"}
    first = post(client, body, **{"Idempotency-Key": "bc-3"})
    again = post(client, body, **{"Idempotency-Key": "bc-3"})
    other = post(client, {**body, "text": "twice"}, **{"Idempotency-Key": "bc-3"})

    assert (first.status_code, again.status_code, other.status_code) == (202, 202, 422)
    assert again.get_json() == first.get_json()
    assert again.headers["Idempotency-Replayed"] == "true"
    assert len(redis_client.keys("msg:*")) == 3
    found = get_ok(client, "/messages?idempotency_key=bc-3")["items"]
    assert len(found) == 3


def test_a_broadcast_counts_as_its_recipients_against_the_rate_limit(
    make_settings: MakeSettings, redis_client: redis.Redis
) -> None:
    client = create_app(make_settings(rate_limit="10/s", rate_limit_burst="20"), redis_client)
    client = client.test_client()
    many = [f"sip:user{n}@contoso.com" for n in range(50)]

    big = post(client, {"to": many, "text": "all"})  # more than the burst: goes on a full one
    refused = post(client, {"to": PEOPLE[:2], "text": "more"})
    single = client.post("/messages", json={"to": PEOPLE[0], "text": "x"}, headers=bearer())

    assert big.status_code == 202
    assert refused.status_code == 429 and single.status_code == 429
    # 50 spent of a 20 burst at 10/s: about 3 s until one more request fits
    assert 3 <= int(refused.headers["Retry-After"]) <= 4
    assert len(redis_client.keys("msg:*")) == 50


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"to": [], "text": "x"}, ["to"]),
        ({"to": [f"sip:u{n}@contoso.com" for n in range(501)], "text": "x"}, ["to"]),
        ({"to": [PEOPLE[0], "alice@contoso.com", 7], "text": "x"}, ["to.1", "to.2"]),
        ({"to": PEOPLE[0], "text": "x"}, ["to"]),
        ({"to": PEOPLE[:1]}, ["text"]),
        ({"to": PEOPLE[:1], "text": "x", "html": "<b>y</b>"}, ["html"]),
        ({"to": PEOPLE[:1], "text": "x", "conversation": "conv_" + "0" * 24}, ["conversation"]),
    ],
    ids=["empty", "501", "bad-entries", "not-a-list", "no-body", "two-bodies", "conversation"],
)
def test_a_bad_broadcast_is_a_problem_naming_each_field(
    client: FlaskClient, redis_client: redis.Redis, body: dict[str, Any], fields: list[str]
) -> None:
    answer = post(client, body)
    assert answer.status_code == 422, answer.get_json()
    assert [e["field"] for e in answer.get_json()["errors"]] == fields
    assert redis_client.keys("msg:*") == []


def test_scopes_and_unknown_ids(client: FlaskClient) -> None:
    assert (
        post(client, {"to": PEOPLE[:1], "text": "x"}, Authorization="Bearer nope").status_code
        == 401
    )
    denied = client.post(
        "/broadcasts", json={"to": PEOPLE[:1], "text": "x"}, headers=bearer(READ_ONLY_KEY)
    )
    assert denied.status_code == 403
    body = post(client, {"to": PEOPLE[:1], "text": "x"}, **bearer(SEND_ONLY_KEY)).get_json()
    assert client.get(f"/broadcasts/{body['id']}", headers=bearer(SEND_ONLY_KEY)).status_code == 403
    missing = client.get("/broadcasts/bc_" + "0" * 32, headers=bearer(READ_ONLY_KEY))
    assert missing.status_code == 404
    assert missing.get_json()["type"].endswith("broadcast-not-found")
    assert client.get("/broadcasts/../x", headers=bearer(READ_ONLY_KEY)).status_code == 404

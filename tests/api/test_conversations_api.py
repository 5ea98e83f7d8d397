"""GET /conversations and GET /conversations/<id> against real Redis: pages newest first that
never skip or repeat while conversations start and change, the state and remote filters, the
message log both ways, and every bad parameter named in a problem."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.outbound.messages import MessageRecord, MessageStatus, MessageStore
from bridge.outbound.outcomes import Outbound
from bridge.session.conversations import (
    LOG_CAP,
    RETENTION_S,
    Conversation,
    ConversationLog,
    ConversationRegistry,
)
from tests.api.conftest import READ_ONLY_KEY, SEND_ONLY_KEY, bearer, get_ok, walk_pages

ACCOUNT = "sip:bot@contoso.com"


def start(conn: redis.Redis, n: int, at: float, alive: bool = True) -> Conversation:
    registry = ConversationRegistry(conn, ACCOUNT)
    href = f"https://ucwa.contoso.com/app/conversations/{n}"
    conv = Conversation(
        id=registry.id_for(href),
        href=href,
        generation=1,
        remote=f"sip:user{n}@contoso.com",
        state="Connected" if alive else "Disconnected",
        messaging_state="Connected" if alive else "Disconnected",
        created_at=at,
        last_activity=at,
    )
    with conn.pipeline() as pipe:
        pipe.multi()
        registry.save(conv, pipe)
        pipe.execute()
    return conv


get = get_ok


def walk(client: FlaskClient, query: str = "", between: Any = None) -> list[str]:
    return walk_pages(client, "/conversations", query, between)


def test_pages_are_newest_first_and_complete(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    now = time.time()
    started = [start(redis_client, n, now - 1000 + n) for n in range(23)]
    assert walk(client, "limit=5") == [c.id for c in reversed(started)]
    first = get(client, "/conversations?limit=5")
    assert first["items"][0]["remote"] == "sip:user22@contoso.com"
    assert first["items"][0]["active"] is True


def test_conversations_started_together_are_each_listed_once(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    same = time.time()
    ids = {start(redis_client, n, same).id for n in range(7)}
    listed = walk(client, "limit=2")
    assert sorted(listed) == sorted(ids) and len(listed) == 7


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    plan=st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=8),
    limit=st.integers(min_value=1, max_value=4),
)
def test_conversations_starting_or_changing_while_paging_never_skip_or_repeat_one(
    client: FlaskClient, redis_client: redis.Redis, plan: list[int], limit: int
) -> None:
    redis_client.flushdb()
    now = time.time()
    existing = [start(redis_client, n, now - 500 + n) for n in range(9)]
    counter = iter(range(100, 1000))

    def meanwhile(page_no: int) -> None:
        for _ in range(plan[page_no % len(plan)]):
            start(redis_client, next(counter), time.time())  # new ones start at the top
        # and an old one changes state (as the poller saves it), which must not move it
        changed = existing[page_no % len(existing)]
        changed.state, changed.last_activity = "Disconnected", time.time()
        with redis_client.pipeline() as pipe:
            pipe.multi()
            ConversationRegistry(redis_client, ACCOUNT).save(changed, pipe)
            pipe.execute()

    listed = walk(client, f"limit={limit}", meanwhile)
    assert len(listed) == len(set(listed))
    # Everything that existed when the walk began is on it, in start order.
    assert [i for i in listed if i in {c.id for c in existing}] == [
        c.id for c in reversed(existing)
    ]


def test_state_active_leaves_out_ended_ones_even_on_sparse_pages(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    now = time.time()
    live = [start(redis_client, n, now - 2000 + n, alive=n % 50 == 0) for n in range(400)]
    wanted = [c.id for c in reversed(live) if c.alive]
    assert walk(client, "state=active&limit=3") == wanted
    everything = walk(client, "state=all&limit=100")
    assert len(everything) == 400


def test_remote_finds_the_latest_conversation_with_that_person(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    conv = start(redis_client, 5, time.time())
    assert [
        c["id"] for c in get(client, "/conversations?remote=SIP:User5@contoso.com")["items"]
    ] == [conv.id]
    assert get(client, "/conversations?remote=sip:nobody@contoso.com")["items"] == []


def test_one_conversation_with_its_log_both_ways(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    conv = start(redis_client, 1, time.time())
    store = MessageStore(redis_client)
    record = MessageRecord.new(
        to=conv.remote, conversation=None, text="hello", html=None, subject=None,
        importance="normal", validity_s=60,
    )  # fmt: skip
    with redis_client.pipeline() as pipe:
        pipe.multi()
        store.create(record, pipe)
        pipe.execute()
    # The final transition writes it into the log, as a worker or the poller does.
    Outbound(redis_client, store, account=ACCOUNT).finalize(
        record.id, MessageStatus.DELIVERED, conversation_href=conv.href
    )
    inbound = {
        "direction": "inbound",
        "message_id": "in-1",
        "from": {"uri": conv.remote, "name": "User One"},
        "text": "hi back",
        "html": None,
        "at": "2026-01-01T00:00:00.000Z",
    }
    with redis_client.pipeline() as pipe:
        pipe.multi()
        ConversationLog.add(pipe, conv.id, inbound, time.time() + 1)
        ConversationLog.add(pipe, conv.id, inbound, time.time() + 2)  # a repeat is kept once
        pipe.execute()

    view = get(client, f"/conversations/{conv.id}")
    assert [(m["direction"], m["text"]) for m in view["messages"]] == [
        ("outbound", "hello"),
        ("inbound", "hi back"),
    ]
    assert view["messages"][0]["status"] == MessageStatus.DELIVERED.value
    assert get(client, f"/messages/{record.id}", key=READ_ONLY_KEY)["conversation"] == conv.id

    redis_client.delete(f"msg:{record.id}")  # the record expired before the log
    shown = get(client, f"/conversations/{conv.id}")["messages"][0]
    assert (shown["message_id"], shown["status"], shown["text"]) == (record.id, None, None)


def test_the_log_keeps_the_newest_entries_within_the_retention(redis_client: redis.Redis) -> None:
    conv_id = "conv_" + "a" * 24
    now = time.time()
    with redis_client.pipeline() as pipe:
        pipe.multi()
        ConversationLog.add(pipe, conv_id, {"n": "too old"}, now - RETENTION_S - 10)
        for n in range(LOG_CAP + 20):
            ConversationLog.add(pipe, conv_id, {"n": n}, now + n)
        pipe.execute()
    kept = ConversationLog(redis_client).entries(conv_id)
    assert [e["n"] for e in kept] == list(range(20, LOG_CAP + 20))
    assert 0 < redis_client.ttl(f"conv:{conv_id}:log") <= RETENTION_S


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=", "limit"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=²", "limit"),
        ("state=ended", "state"),
        ("cursor=12~conv_zz", "cursor"),
        ("cursor=nan~conv_" + "0" * 24, "cursor"),
        ("sort=asc", "sort"),
    ],
)
def test_a_bad_parameter_is_a_problem_naming_it(
    client: FlaskClient, query: str, field: str
) -> None:
    answer = client.get(f"/conversations?{query}", headers=bearer(READ_ONLY_KEY))
    assert answer.status_code == 422
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert [e["field"] for e in answer.get_json()["errors"]] == [field]


def test_reading_conversations_needs_the_read_scope(client: FlaskClient) -> None:
    assert client.get("/conversations").status_code == 401
    assert client.get("/conversations", headers=bearer(SEND_ONLY_KEY)).status_code == 403
    unknown = client.get("/conversations/conv_" + "0" * 24, headers=bearer(READ_ONLY_KEY))
    assert unknown.status_code == 404
    assert (
        client.get("/conversations/../messages", headers=bearer(READ_ONLY_KEY)).status_code == 404
    )


def test_end_and_typing_queue_one_job_each_and_need_the_send_scope(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    from rq import Queue

    from bridge.outbound.conversation_actions import ACTION_FUNC, TYPING_TTL_S

    conv = start(redis_client, 3, time.time())
    conv.links = {
        "stopMessaging": "https://ucwa.contoso.com/m/terminate",
        "setIsTyping": "https://ucwa.contoso.com/m/typing",
    }
    with redis_client.pipeline() as pipe:
        pipe.multi()
        ConversationRegistry(redis_client, ACCOUNT).save(conv, pipe)
        pipe.execute()
    path = f"/conversations/{conv.id}"
    assert client.post(path + "/typing", headers=bearer(READ_ONLY_KEY)).status_code == 403
    assert client.post(path + "/typing").status_code == 401

    answer = client.post(path + "/typing", headers=bearer(SEND_ONLY_KEY))
    assert answer.status_code == 202, answer.get_data(as_text=True)
    [job] = Queue("send", connection=redis_client).get_jobs()
    assert (job.func_name, job.args, job.id) == (
        ACTION_FUNC,
        (conv.id, "typing"),
        answer.json["job_id"],
    )
    assert job.ttl == TYPING_TTL_S  # a typing indicator shown late is dropped instead
    assert client.post(path + "/end", headers=bearer(SEND_ONLY_KEY)).status_code == 202


@pytest.mark.parametrize(
    ("state", "messaging", "links", "action"),
    [
        ("Disconnected", "Disconnected", {}, "end"),
        ("Connected", "Disconnected", {"stopMessaging": "x", "setIsTyping": "y"}, "typing"),
        ("Connected", "Connected", {"sendMessage": "x"}, "end"),
    ],
)
def test_acting_on_a_conversation_that_is_not_live_is_409_and_queues_nothing(
    client: FlaskClient,
    redis_client: redis.Redis,
    state: str,
    messaging: str,
    links: dict[str, str],
    action: str,
) -> None:
    from rq import Queue

    conv = start(redis_client, 4, time.time())
    conv.state, conv.messaging_state, conv.links = state, messaging, links
    with redis_client.pipeline() as pipe:
        pipe.multi()
        ConversationRegistry(redis_client, ACCOUNT).save(conv, pipe)
        pipe.execute()
    answer = client.post(f"/conversations/{conv.id}/{action}", headers=bearer(SEND_ONLY_KEY))
    assert answer.status_code == 409
    assert answer.json["type"].endswith("conversation-not-live")
    assert Queue("send", connection=redis_client).count == 0
    missing = client.post("/conversations/conv_" + "e" * 24 + "/end", headers=bearer(SEND_ONLY_KEY))
    assert missing.status_code == 404

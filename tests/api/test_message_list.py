"""GET /messages against real Redis: pages newest first that never skip or repeat while
messages are accepted and change status, every filter against a brute-force model, indexes
that expire with the records, a bounded cost per page, and every bad parameter named."""

from __future__ import annotations

import itertools
import time
from dataclasses import replace
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.api.message_list import parse_rfc3339
from bridge.outbound.intake import Intake
from bridge.outbound.message_index import PREFIX, SCHEDULE_HORIZON_S
from bridge.outbound.message_search import MessageQuery, MessageSearch
from bridge.outbound.messages import MessageRecord, MessageStatus, MessageStore, format_time
from tests.api.conftest import READ_ONLY_KEY, SEND_ONLY_KEY, bearer, get_ok, walk_pages

PEOPLE = [f"sip:user{n}@contoso.com" for n in range(4)]
CONVERSATIONS = [f"conv_{n:024x}" for n in range(2)]
# Where a message can end, and the fields a worker sets on the way.
ENDINGS: dict[str, list[tuple[MessageStatus, dict[str, Any]]]] = {
    "queued": [],
    "sending": [(MessageStatus.SENDING, {})],
    "delivered": [(MessageStatus.SENDING, {}), (MessageStatus.DELIVERED, {})],
    "failed": [(MessageStatus.FAILED, {})],
    "expired": [(MessageStatus.EXPIRED, {})],
    "cancelled": [(MessageStatus.CANCELLED, {})],
}


def accept(
    conn: redis.Redis,
    to: str,
    at: float,
    *,
    ending: str = "queued",
    conversation: str | None = None,
    idempotency_key: str | None = None,
    ttl_s: int = 3600,
) -> MessageRecord:
    """A message accepted at ``at`` through the real intake, then moved as a worker would;
    a cold send learns its conversation with its first move."""
    store = MessageStore(conn, record_ttl_s=ttl_s)
    record = MessageRecord.new(to=to, text="hello", validity_s=600, now=at)
    if idempotency_key is not None:
        record = replace(record, idempotency_key=idempotency_key)
    stored = Intake(conn, store).submit(record)
    for n, (status, fields) in enumerate(ENDINGS[ending]):
        extra = {"conversation": conversation} if conversation and n == 0 else {}
        stored = store.transition(stored.id, status, **fields, **extra)
    return stored


get = get_ok


def walk(client: FlaskClient, query: str = "", between: Any = None) -> list[str]:
    return walk_pages(client, "/messages", query, between)


def test_pages_are_newest_first_and_complete(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    now = time.time()
    sent = [accept(redis_client, PEOPLE[n % 4], now - 100 + n) for n in range(23)]

    first = get(client, "/messages?limit=5")
    assert [m["id"] for m in first["items"]] == [r.id for r in reversed(sent[-5:])]
    assert first["items"][0]["to"] == sent[-1].to
    assert walk(client, "limit=5") == [r.id for r in reversed(sent)]
    assert walk(client, "limit=23") == walk(client, "limit=100")
    assert get(client, "/messages?limit=23")["next_cursor"] is None


def test_a_message_shows_as_get_shows_it(client: FlaskClient, redis_client: redis.Redis) -> None:
    record = accept(redis_client, PEOPLE[0], time.time(), ending="failed")
    (item,) = get(client, "/messages")["items"]
    assert item == get(client, f"/messages/{record.id}")
    assert item["status"] == "failed"


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    plan=st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=12),
    limit=st.integers(min_value=1, max_value=4),
)
def test_paging_never_skips_or_repeats_while_messages_arrive_and_move(
    client: FlaskClient, redis_client: redis.Redis, plan: list[int], limit: int
) -> None:
    """What existed when paging began is listed exactly once, in order, whatever is accepted
    (newer) or finishes between pages."""
    redis_client.flushdb()
    now = time.time()
    before = [accept(redis_client, PEOPLE[n % 4], now - 50 + n) for n in range(10)]
    store = MessageStore(redis_client, record_ttl_s=3600)

    def meanwhile(page_no: int) -> None:
        for n in range(plan[page_no % len(plan)]):
            accept(redis_client, PEOPLE[n], time.time())
        victim = before[(page_no * 3) % len(before)]
        if store.get(victim.id).status == MessageStatus.QUEUED:
            store.transition(victim.id, MessageStatus.SENDING)

    listed = walk(client, f"limit={limit}", meanwhile)
    assert listed[: len(before)] == [r.id for r in reversed(before)]
    assert len(listed) == len(before)


RECORDS = st.lists(
    st.tuples(
        st.sampled_from(PEOPLE[:2]),  # few people, conversations and keys: filters overlap
        st.integers(min_value=0, max_value=40),  # seconds before now it was accepted
        st.sampled_from(sorted(ENDINGS)),
        st.one_of(st.none(), st.sampled_from(CONVERSATIONS)),
        st.one_of(st.none(), st.sampled_from(["k1", "k2"])),
    ),
    min_size=3,
    max_size=25,
)
FILTERS: dict[str, st.SearchStrategy[Any]] = {
    "status": st.lists(st.sampled_from([s.value for s in MessageStatus]), min_size=1, max_size=3),
    "to": st.sampled_from([p.upper() for p in PEOPLE[:2]] + PEOPLE[:2]),
    "conversation": st.sampled_from(CONVERSATIONS),
    "since": st.integers(min_value=0, max_value=45),
    "until": st.integers(min_value=0, max_value=45),
    "idempotency_key": st.sampled_from(["k1", "k2"]),
}


# Each filter alone and every pair of them: the index a query reads and the filters checked on
# the records differ by combination, so each one gets examples of its own.
COMBINATIONS = [(name,) for name in sorted(FILTERS)] + list(
    itertools.combinations(sorted(FILTERS), 2)
)


@pytest.mark.parametrize("names", COMBINATIONS, ids=["+".join(c) for c in COMBINATIONS])
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), records=RECORDS, limit=st.integers(min_value=1, max_value=7))
def test_every_filter_lists_what_a_brute_force_search_finds(
    client: FlaskClient,
    redis_client: redis.Redis,
    names: tuple[str, ...],
    data: st.DataObject,
    records: list[tuple[str, int, str, str | None, str | None]],
    limit: int,
) -> None:
    query = {name: data.draw(FILTERS[name], label=name) for name in names}
    redis_client.flushdb()
    now = round(time.time())
    stored = [
        accept(redis_client, to, now - ago, ending=ending, conversation=conv, idempotency_key=key)
        for to, ago, ending, conv, key in records
    ]
    params: list[str] = [f"limit={limit}"]
    for name, value in query.items():
        if name == "status":
            params += [f"status={s}" for s in value]
        elif name in ("since", "until"):
            params.append(f"{name}={format_time(now - value)}")
        else:
            params.append(f"{name}={value}")

    def wanted(r: MessageRecord) -> bool:
        created = parse_rfc3339(r.created_at)
        return (
            (not query.get("status") or r.status.value in query["status"])
            and ("to" not in query or r.to == query["to"].lower())
            and ("conversation" not in query or r.conversation == query["conversation"])
            and ("since" not in query or created >= now - query["since"])
            and ("until" not in query or created < now - query["until"])
            and ("idempotency_key" not in query or r.idempotency_key == query["idempotency_key"])
        )

    final = {r.id: MessageStore(redis_client).get(r.id) for r in stored}
    expected = sorted(
        (r for r in final.values() if wanted(r)),
        key=lambda r: (r.created_at, r.id),
        reverse=True,
    )
    assert walk(client, "&".join(params)) == [r.id for r in expected]


def test_status_is_repeatable_and_comma_separated(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    now = time.time()
    ends = ["queued", "failed", "expired", "delivered", "failed"]
    sent = [accept(redis_client, PEOPLE[0], now - 10 + n, ending=e) for n, e in enumerate(ends)]
    problems = [r.id for r in reversed(sent) if r.status.value in ("failed", "expired")]
    assert walk(client, "status=failed&status=expired&limit=1") == problems
    assert walk(client, "status=failed,expired") == problems


def test_a_cold_send_is_found_by_the_conversation_it_went_out_on(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    cold = accept(redis_client, PEOPLE[1], time.time(), ending="queued")
    assert get(client, f"/messages?conversation={CONVERSATIONS[0]}")["items"] == []
    MessageStore(redis_client, 3600).transition(
        cold.id, MessageStatus.SENDING, conversation=CONVERSATIONS[0]
    )
    (item,) = get(client, f"/messages?conversation={CONVERSATIONS[0]}")["items"]
    assert item["id"] == cold.id and item["conversation"] == CONVERSATIONS[0]


def test_a_reply_into_a_conversation_is_found_by_the_person(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """A reply names a conversation, not ``to``; its line is the person's."""
    store = MessageStore(redis_client)
    record = MessageRecord.new(conversation=CONVERSATIONS[1], text="re", validity_s=60)
    record = replace(record, line=PEOPLE[2])
    stored = Intake(redis_client, store).submit(record)
    assert [m["id"] for m in get(client, f"/messages?to={PEOPLE[2]}")["items"]] == [stored.id]
    assert walk(client, f"conversation={CONVERSATIONS[1]}") == [stored.id]


def test_a_message_sent_with_an_idempotency_key_is_found_by_it(client: FlaskClient) -> None:
    body = {"to": PEOPLE[0], "text": "once"}
    headers = {**bearer(), "Idempotency-Key": "deploy-42/step:1"}
    first = client.post("/messages", json=body, headers=headers)
    again = client.post("/messages", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.get_json()["idempotency_key"] == "deploy-42/step:1"

    found = get(client, "/messages?idempotency_key=deploy-42/step:1")["items"]
    assert [m["id"] for m in found] == [first.get_json()["id"]]
    assert get(client, "/messages?idempotency_key=deploy-43")["items"] == []


def test_indexes_expire_with_the_records(client: FlaskClient, redis_client: redis.Redis) -> None:
    record = accept(
        redis_client,
        PEOPLE[0],
        time.time(),
        conversation=CONVERSATIONS[0],
        ending="sending",
        idempotency_key="k",
        ttl_s=2,
    )
    indexes = redis_client.keys(PREFIX + "*")
    # all, sending, the person and the conversation (each alone and with sending), the key;
    # the queued indexes were emptied and so removed
    assert len(indexes) == 7
    assert all(0 < redis_client.ttl(key) <= 2 for key in indexes)
    assert [m["id"] for m in get(client, "/messages")["items"]] == [record.id]
    deadline = time.monotonic() + 10
    while redis_client.exists(f"msg:{record.id}") and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.2)
    assert redis_client.keys(PREFIX + "*") == []


def test_members_of_records_gone_before_their_index_are_trimmed_and_skipped(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    now = time.time()
    old = accept(redis_client, PEOPLE[0], now - 100, ttl_s=3600)
    redis_client.delete(f"msg:{old.id}")  # as a lowered BRIDGE_RECORD_TTL_S leaves it
    new = accept(redis_client, PEOPLE[0], now, ttl_s=3600)
    assert walk(client, "") == [new.id]
    assert redis_client.zcard(PREFIX + "all") == 1  # the reader dropped the dead member
    # A writer trims members older than the TTL and the schedule horizon together (a record
    # scheduled that far ahead lives that much longer): they go as the next message comes.
    horizon = SCHEDULE_HORIZON_S
    accept(redis_client, PEOPLE[1], now - horizon - 50, ttl_s=3600)
    accept(redis_client, PEOPLE[1], now - horizon - 5, ttl_s=3600)
    assert redis_client.zcard(f"{PREFIX}to:{PEOPLE[1]}") == 2
    accept(redis_client, PEOPLE[1], now, ttl_s=10)
    assert redis_client.zcard(f"{PREFIX}to:{PEOPLE[1]}") == 2  # the one 5 s past it is left


def test_a_page_scans_a_bounded_number_of_members(redis_client: redis.Redis) -> None:
    """Filters the chosen index does not cover cost reads; a page stops at the budget and
    hands back a cursor, and walking on finds every match."""
    now = time.time()
    matches = []
    for n in range(60):
        to = PEOPLE[1] if n % 20 == 0 else PEOPLE[0]
        record = accept(
            redis_client, to, now - 100 + n, ending="sending", conversation=CONVERSATIONS[0]
        )
        if to == PEOPLE[1]:
            matches.append(record.id)
    search = MessageSearch(redis_client, scan_budget=10)
    query = MessageQuery(conversation=CONVERSATIONS[0], to=PEOPLE[1])
    found: list[str] = []
    cursor, pages = None, 0
    while True:
        page = search.page(query, 50, cursor)
        pages += 1
        found += [r.id for r in page.records]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert found == list(reversed(matches))
    assert pages >= 60 // 10


def test_a_page_costs_the_same_redis_commands_at_any_size(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """No keyspace scan: the commands one page runs do not depend on how many messages
    exist (Redis's own command counters, 50 stored against 1,000)."""

    def commands_for(path: str) -> dict[str, int]:
        redis_client.config_resetstat()
        get(client, path)
        stats = redis_client.info("commandstats")
        return {
            name: int(value["calls"])
            for name, value in stats.items()
            if not name.startswith(("cmdstat_info", "cmdstat_config"))
        }

    now = time.time()
    with redis_client.pipeline(transaction=False) as pipe:
        store = MessageStore(redis_client)
        for n in range(50):
            store.accept(
                MessageRecord.new(to=PEOPLE[n % 4], text="x", validity_s=60, now=now - 1000 + n),
                pipe,
            )
        pipe.execute()
    paths = ["/messages?limit=20", f"/messages?to={PEOPLE[1]}&limit=5", "/messages?status=queued"]
    small = [commands_for(p) for p in paths]
    with redis_client.pipeline(transaction=False) as pipe:
        for n in range(950):
            store.accept(
                MessageRecord.new(to=PEOPLE[n % 4], text="x", validity_s=60, now=now - 5000 + n),
                pipe,
            )
        pipe.execute()
    assert [commands_for(p) for p in paths] == small
    assert not any("scan" in name or "keys" in name for s in small for name in s)


@pytest.mark.parametrize(
    ("query", "fields"),
    [
        ("limit=", ["limit"]),
        ("limit=0", ["limit"]),
        ("limit=101", ["limit"]),
        ("status=sent", ["status"]),
        ("status=", ["status"]),
        ("status=failed,", ["status"]),
        ("to=alice@contoso.com", ["to"]),
        ("conversation=42", ["conversation"]),
        ("since=2024-05-01", ["since"]),
        ("since=2024-05-01T12:00:00", ["since"]),
        ("until=2024-13-01T12:00:00Z", ["until"]),
        ("idempotency_key=", ["idempotency_key"]),
        ("cursor=12:msg_zz", ["cursor"]),
        ("sort=asc", ["sort"]),
        ("sort=asc&limit=0&to=x", ["sort", "to", "limit"]),
    ],
)
def test_a_bad_parameter_is_a_problem_naming_it(
    client: FlaskClient, query: str, fields: list[str]
) -> None:
    answer = client.get(f"/messages?{query}", headers=bearer(READ_ONLY_KEY))
    assert answer.status_code == 422
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert [e["field"] for e in answer.get_json()["errors"]] == fields


def test_rfc3339_times_with_offsets_and_leap_seconds() -> None:
    assert parse_rfc3339("2024-05-01T12:00:00Z") == parse_rfc3339("2024-05-01T14:00:00+02:00")
    assert parse_rfc3339("2024-05-01t12:00:00.123456789z") == pytest.approx(1714564800.123457)
    assert parse_rfc3339("2016-12-31T23:59:60Z") == parse_rfc3339("2017-01-01T00:00:00Z")


def test_listing_needs_the_read_scope(client: FlaskClient) -> None:
    assert client.get("/messages").status_code == 401
    assert client.get("/messages", headers=bearer(SEND_ONLY_KEY)).status_code == 403
    assert client.get("/messages", headers=bearer(READ_ONLY_KEY)).status_code == 200

"""Outcomes held with the cursor: a poller that stops (or a Redis that goes away) after an event
batch's cursor transaction and before its messages are settled loses no outcome, and settling
one twice changes nothing.

Real Redis, the real sink; the oracle is the same batch applied and settled without a stop.
Before outcomes were held, a stop in that window left the messages waiting for their watchdog
(90 s by default) and every later message to the same person behind them.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench._redis_trips import CountingProxy
from bridge.inbound.event_sink import EventSink, unsettled_key
from bridge.outbound.intake import Intake
from bridge.outbound.messages import MessageRecord, MessageStatus, MessageStore
from bridge.outbound.outcomes import Outbound
from bridge.ucwa.events import parse_events
from tests.inbound.test_batch_reads import cursor_transaction
from tests.inbound.test_staging import ACCOUNT, APP, BASE, COMM, CONV

PEOPLE = [f"sip:user{n}@contoso.com" for n in range(3)]
DECLINED = {"code": "Forbidden", "subcode": "DeclinedByUser", "message": "declined"}


def outcome_event(n: int, message_id: str, kind: str, success: bool) -> dict[str, Any]:
    """A ``completed`` event of an outgoing invitation or message, as SendAnIM.md shows."""
    if kind == "invitation":
        href = f"{COMM}/messagingInvitations/{n}"
        resource: dict[str, Any] = {
            "direction": "Outgoing",
            "operationId": message_id,
            "state": "Connected" if success else "Failed",
            "_links": {"self": {"href": href}, "conversation": {"href": CONV}},
        }
    else:
        href = f"{CONV}/messaging/messages/{n}"
        resource = {
            "direction": "Outgoing",
            "operationId": message_id,
            "_links": {"self": {"href": href}},
        }
    event: dict[str, Any] = {
        "link": {"rel": "messagingInvitation" if kind == "invitation" else "message", "href": href},
        "type": "completed",
        "status": "Success" if success else "Failure",
        "_embedded": {("messagingInvitation" if kind == "invitation" else "message"): resource},
    }
    if not success:
        event["reason"] = DECLINED
    return event


def waiting(client: redis.Redis, store: MessageStore, to: str, kind: str) -> MessageRecord:
    """A message whose POST went out and which waits for its outcome."""
    record = Intake(client, store).submit(MessageRecord.new(to=to, text="x", validity_s=300))
    step = "invited" if kind == "invitation" else "posted"
    return store.update(
        record.id,
        lambda r: replace(r, status=MessageStatus.SENDING, step=step, attempts=1),
    )


Plan = list[tuple[int, str, bool]]


def run(client: redis.Redis, plan: Plan, stop: str) -> tuple[dict[int, tuple[str, str]], list[str]]:
    """Apply one batch of ``plan``'s outcomes and stop at ``stop``; a second poller's sink
    then does what it does on taking over. Returns each message's status and error code by
    its place in the plan, and the final transitions in the order they happened."""
    client.flushdb()
    finals: list[str] = []
    store = MessageStore(client, record_ttl_s=3600)

    def sink() -> EventSink:
        def on_final(pipe: redis.client.Pipeline, record: MessageRecord) -> None:
            finals.append(record.id)

        outbound = Outbound(client, store, on_final=on_final, account=ACCOUNT)
        return EventSink(client, ACCOUNT, outbound=outbound)

    ids = [waiting(client, store, PEOPLE[who], kind).id for who, kind, _ in plan]
    events = [outcome_event(n, ids[n], kind, success) for n, (_, kind, success) in enumerate(plan)]
    first = sink()
    # "…, then another batch": the first half's batch stops right after its cursor transaction;
    # the second half's finds that entry held before its own and settles both.
    split = len(events) // 2 if stop.endswith("then another batch") else 0
    parts = [events[:split], events[split:]] if split else [events]
    for n, part in enumerate(parts):
        batch = parse_events(
            {
                "_links": {"next": {"href": f"{APP}/events?ack={n + 2}"}},
                "sender": [{"rel": "conversation", "href": CONV, "events": part}],
            }
        )
        result, answers = cursor_transaction(client, first, batch)
    if stop == "after settling, before the entry was dropped":
        held = client.lrange(unsettled_key(ACCOUNT), 0, -1)
        first.settle(result, answers)
        client.rpush(unsettled_key(ACCOUNT), *held)
    elif stop in ("never", "right after the cursor transaction, then another batch"):
        first.settle(result, answers)  # as the poller does: from the transaction's reads
    # else: stopped right after the cursor transaction
    sink().settle()  # the next active poller, after its bootstrap
    assert client.llen(unsettled_key(ACCOUNT)) == 0
    outcome = {}
    for n, message_id in enumerate(ids):
        record = store.get(message_id)
        outcome[n] = (record.status.value, record.error.code if record.error else "")
        if record.status is MessageStatus.DELIVERED:
            # its conversation, from the event, though the worker never recorded the href
            assert record.conversation is not None, (plan[n], record)
    return outcome, finals


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    plan=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=2),
            st.sampled_from(["invitation", "message"]),
            st.booleans(),
        ),
        min_size=1,
        max_size=8,
    ),
    stop=st.sampled_from(
        [
            "right after the cursor transaction",
            "after settling, before the entry was dropped",
            "right after the cursor transaction, then another batch",
        ]
    ),
)
def test_a_stop_between_the_cursor_and_the_settling_loses_and_doubles_nothing(
    redis_client: redis.Redis, plan: Plan, stop: str
) -> None:
    expected, expected_finals = run(redis_client, plan, "never")
    assert all(status != "sending" for status, _ in expected.values()), expected

    outcome, finals = run(redis_client, plan, stop)

    assert outcome == expected
    assert len(finals) == len(set(finals)) == len(expected_finals)  # each ended once


def test_an_unreadable_held_entry_is_quarantined_and_the_rest_settled(
    redis_client: redis.Redis,
) -> None:
    store = MessageStore(redis_client, record_ttl_s=3600)
    record = waiting(redis_client, store, PEOPLE[0], "message")
    sink = EventSink(redis_client, ACCOUNT, outbound=Outbound(redis_client, store))
    good = [
        {
            "kind": "message",
            "operation": record.id,
            "success": True,
            "reason": None,
            "href": BASE + f"{CONV}/messaging/messages/1",
        }
    ]
    redis_client.rpush(unsettled_key(ACCOUNT), b"\xff not json", json.dumps([{"kind": 1}]))
    redis_client.rpush(unsettled_key(ACCOUNT), json.dumps(good))

    sink.settle()

    assert store.get(record.id).status is MessageStatus.DELIVERED
    assert redis_client.llen(unsettled_key(ACCOUNT)) == 0
    assert [e["stage"] for e in sink.quarantine.entries()] == ["settle", "settle"]


def test_an_entry_reads_its_records_in_one_round_trip(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """Each outcome used to read its record before its transition read it again under WATCH:
    the entry's records now come in one MGET, a repeated operation reading its own again.
    Counted on the wire, by a proxy in front of Redis."""
    store = MessageStore(redis_client, record_ttl_s=3600)
    records = [waiting(redis_client, store, person, "message") for person in PEOPLE]
    items = [
        {
            "kind": "message",
            "operation": record.id,
            "success": True,
            "reason": None,
            "href": BASE + f"{CONV}/messaging/messages/{n}",
        }
        for n, record in enumerate(records)
    ]
    items.append({**items[0], "href": BASE + f"{CONV}/messaging/messages/9"})  # a repeat
    redis_client.rpush(unsettled_key(ACCOUNT), json.dumps(items))
    url = urlsplit(redis_url)
    proxy = CountingProxy(url.hostname or "127.0.0.1", url.port or 6379)
    try:
        through = redis.Redis.from_url(proxy.url(int(url.path.lstrip("/") or 0)))
        sink = EventSink(
            through, ACCOUNT, outbound=Outbound(through, MessageStore(through, record_ttl_s=3600))
        )
        through.ping()
        proxy.reset()

        sink.settle()

        names = proxy.reset().names
    finally:
        proxy.close()
    assert [store.get(r.id).status for r in records] == [MessageStatus.DELIVERED] * 3
    assert names["MGET"] == 1
    # one read under WATCH per transition, and the repeat's own (it finds the message final)
    assert names["GET"] == len(records) + 1

"""What one event batch reads from Redis: each conversation it updates once, in one round trip
for the batch; the held outcomes and their records inside the cursor transaction. And a record
that cannot be read sets aside only the notices that need it.

Real Redis behind a counting proxy (``bench/_redis_trips.py``), the real sink, batches shaped
like SendAnIM.md's events. The old poller read each conversation again with a GET of its own
(one per conversation per batch), and the held entries and their records in two more round
trips after the cursor transaction.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.inbound.event_sink import BatchResult, EventSink
from bridge.outbound.intake import Intake
from bridge.outbound.messages import MessageRecord, MessageStatus, MessageStore
from bridge.outbound.outcomes import Outbound
from bridge.session.conversations import Conversation, ConversationRegistry
from bridge.ucwa.events import EventBatch, parse_events
from tests.inbound.test_remote_lookup import conversation_updated, outgoing_completed
from tests.inbound.test_staging import ACCOUNT, APP, BASE, COMM, CURSOR


def conv_href(n: int) -> str:
    return f"{COMM}/conversations/c{n:03d}"


def person(n: int) -> str:
    return f"sip:user{n}@contoso.com"


def cold_send_completed(n: int, operation: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(sender rel, sender href, event): what a cold send's success brings on the channel."""
    conv = conv_href(n)
    return [
        ("communication", COMM, outgoing_completed(conv, operation)),
        ("communication", COMM, conversation_updated(conv)),
        (
            "conversation",
            conv,
            {
                "link": {"rel": "messaging", "href": f"{conv}/messaging"},
                "type": "updated",
                "_embedded": {
                    "messaging": {
                        "state": "Connected",
                        "negotiatedMessageFormats": ["Plain"],
                        "_links": {"sendMessage": {"href": f"{conv}/messaging/messages"}},
                    }
                },
            },
        ),
    ]


def make_batch(events: list[tuple[str, str, dict[str, Any]]]) -> EventBatch:
    senders: list[dict[str, Any]] = []
    for rel, href, event in events:
        if not senders or senders[-1]["href"] != href:
            senders.append({"rel": rel, "href": href, "events": []})
        senders[-1]["events"].append(event)
    return parse_events({"_links": {"next": {"href": f"{APP}/events?ack=2"}}, "sender": senders})


def cursor_transaction(
    client: redis.Redis, sink: EventSink, batch: EventBatch
) -> tuple[BatchResult, list[Any]]:
    """What the poller does with a batch up to its settling: its notices, then one transaction
    with the batch's operations, state, held outcomes and cursor. Its result and answers."""
    notices = sink.notices(batch, BASE)
    with client.pipeline() as pipe:
        pipe.multi()
        sink.note_operations(batch, BASE, pipe)
        result = sink.apply_state(notices, 1, BASE, pipe)
        pipe.hset(CURSOR, "cursor", batch.cursor().href)
        return result, pipe.execute()


def keep(registry: ConversationRegistry, n: int) -> None:
    """A conversation the worker recorded when it opened it: its remote, not yet connected."""
    conv = Conversation(
        id=registry.id_for(BASE + conv_href(n)),
        href=BASE + conv_href(n),
        generation=1,
        remote=person(n),
        created_at=time.time(),
        last_activity=time.time(),
    )
    with registry.client.pipeline() as pipe:
        registry.save(conv, pipe)
        pipe.execute()


def invited(client: redis.Redis, store: MessageStore, n: int) -> MessageRecord:
    record = Intake(client, store).submit(MessageRecord.new(to=person(n), text="x", validity_s=60))
    return store.update(
        record.id,
        lambda r: replace(r, status=MessageStatus.SENDING, step="invited", attempts=1),
    )


def through(redis_proxy: Any, redis_client: redis.Redis) -> redis.Redis:
    db = int(redis_client.connection_pool.connection_kwargs.get("db", 0))
    client = redis.Redis.from_url(redis_proxy.url(db))
    client.ping()
    return client


@pytest.mark.parametrize("conversations", [1, 6])
def test_a_batch_reads_each_conversation_once_and_settles_from_its_own_transaction(
    redis_client: redis.Redis, redis_proxy: Any, conversations: int
) -> None:
    client = through(redis_proxy, redis_client)
    store = MessageStore(client, record_ttl_s=3600)
    sink = EventSink(client, ACCOUNT, outbound=Outbound(client, store, account=ACCOUNT))
    records = [invited(client, store, n) for n in range(conversations)]
    for n in range(conversations):
        keep(sink.registry, n)
    events = [e for n, r in enumerate(records) for e in cold_send_completed(n, r.id)]
    batch = make_batch(events)
    redis_proxy.reset()

    result, answers = cursor_transaction(client, sink, batch)
    applied = redis_proxy.reset()
    sink.settle(result, answers)
    settled = redis_proxy.reset()

    # the batch's conversations, one read for all; the records, inside the cursor transaction
    assert applied.names["MGET"] == 2
    assert applied.names["GET"] == 0  # none read again, one by one
    assert applied.round_trips == 2  # that read, and the cursor transaction
    assert settled.names["LRANGE"] == settled.names["MGET"] == 0  # read by the transaction
    # each message: its transition's read under WATCH and its EXEC; then the entry dropped
    assert settled.round_trips == 2 * conversations + 1
    assert [store.get(r.id).status for r in records] == [MessageStatus.DELIVERED] * conversations
    for n in range(conversations):
        conv = sink.registry.by_href(BASE + conv_href(n))
        assert conv is not None
        # what the worker recorded, kept; what the events said, added
        assert conv.remote == person(n)
        assert conv.can_send(1)
        assert conv.links["sendMessage"] == BASE + conv_href(n) + "/messaging/messages"


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(garbage=st.binary(max_size=64), bad=st.integers(min_value=0, max_value=2))
def test_a_conversation_record_that_cannot_be_read_sets_aside_only_its_own_notices(
    redis_client: redis.Redis, garbage: bytes, bad: int
) -> None:
    redis_client.flushdb()
    store = MessageStore(redis_client, record_ttl_s=3600)
    sink = EventSink(redis_client, ACCOUNT, outbound=Outbound(redis_client, store, account=ACCOUNT))
    records = [invited(redis_client, store, n) for n in range(3)]
    for n in range(3):
        keep(sink.registry, n)
    redis_client.set(f"conv:{sink.registry.id_for(BASE + conv_href(bad))}", garbage)
    batch = make_batch([e for n, r in enumerate(records) for e in cold_send_completed(n, r.id)])

    result, answers = cursor_transaction(redis_client, sink, batch)
    sink.settle(result, answers)

    assert redis_client.hget(CURSOR, "cursor") is not None  # the batch went through
    for n in range(3):
        if n != bad:
            conv = sink.registry.get(sink.registry.id_for(BASE + conv_href(n)))
            assert conv is not None and conv.can_send(1) and conv.remote == person(n)
        # every outcome settles: a message's settlement needs no conversation record
        assert store.get(records[n].id).status is MessageStatus.DELIVERED
    assert result.quarantined >= 1  # the notices that needed the unreadable record
    assert all(e["stage"] == "apply" for e in sink.quarantine.entries())

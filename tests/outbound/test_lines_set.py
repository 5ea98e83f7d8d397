"""The set of non-empty lines (``rcpt:lines``), which the poller's sweep reads instead of
scanning the keyspace: whatever intake, release, cancel and finishing do, it holds every
recipient whose line holds something (and, but for an emptied line the sweep forgets, no
other)."""

from __future__ import annotations

import random
import time

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.outbound.intake import Intake
from bridge.outbound.messages import (
    LINES_KEY,
    MessageRecord,
    MessageStatus,
    MessageStore,
    RecipientQueue,
)
from bridge.outbound.outcomes import Outbound

PEOPLE = [f"sip:user{n}@contoso.com" for n in range(3)]


def lines_with_something(conn: redis.Redis) -> set[str]:
    return {k.decode()[5:-5] for k in conn.scan_iter(match="rcpt:*:fifo")}


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    plan=st.lists(
        st.tuples(
            st.sampled_from(["now", "later", "release", "cancel", "finish"]),
            st.integers(min_value=0, max_value=2),
        ),
        min_size=1,
        max_size=30,
    ),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_the_set_of_lines_holds_every_non_empty_line(
    redis_client: redis.Redis, plan: list[tuple[str, int]], seed: int
) -> None:
    redis_client.flushdb()
    rng = random.Random(seed)
    store = MessageStore(redis_client, record_ttl_s=3600)
    intake = Intake(redis_client, store)
    outbound = Outbound(redis_client, store)
    fifo = RecipientQueue(redis_client)
    scheduled: list[str] = []
    accepted: list[str] = []
    for step, who in plan:
        to = PEOPLE[who]
        if step == "now":
            record = MessageRecord.new(to=to, text="x", validity_s=60)
            accepted.append(intake.submit(record).id)
        elif step == "later":
            now = time.time()
            record = MessageRecord.new(to=to, text="x", validity_s=60, now=now, send_at=now + 60)
            scheduled.append(intake.submit(record).id)
        elif step == "release" and scheduled:
            outbound.release(scheduled.pop(rng.randrange(len(scheduled))))
        elif step == "cancel" and accepted:
            target = accepted[rng.randrange(len(accepted))]
            if store.get(target).cancellable:
                outbound.cancel(target, "no")
        elif step == "finish":
            head = fifo.head(to)
            if head is not None and not store.get(head).status.is_terminal:
                store.transition(head, MessageStatus.FAILED)
                outbound.advance(store.get(head))
        members = {m.decode() for m in redis_client.smembers(LINES_KEY)}
        assert lines_with_something(redis_client) <= members, (step, who)
        assert members <= set(PEOPLE)


def test_a_line_emptied_by_finishing_leaves_the_set(redis_client: redis.Redis) -> None:
    store = MessageStore(redis_client)
    record = Intake(redis_client, store).submit(
        MessageRecord.new(to=PEOPLE[0], text="x", validity_s=60)
    )
    assert redis_client.smembers(LINES_KEY) == {PEOPLE[0].encode()}
    store.transition(record.id, MessageStatus.FAILED)
    Outbound(redis_client, store).advance(store.get(record.id))
    assert redis_client.smembers(LINES_KEY) == set()


def test_lines_written_before_the_set_existed_join_it_once(redis_client: redis.Redis) -> None:
    """After an upgrade the first sweep of each poller seeds the set from the keyspace."""
    from bridge.ucwa.auth import Credentials
    from workers.poller import Poller

    redis_client.rpush("rcpt:sip:old@contoso.com:fifo", "msg_" + "0" * 32)
    poller = Poller(redis_client, Credentials("sip:bot@contoso.com", "pw"), "http://127.0.0.1:9")
    poller._seed_lines()
    assert redis_client.smembers(LINES_KEY) == {b"sip:old@contoso.com"}

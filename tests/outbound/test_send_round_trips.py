"""What one send job costs in Redis round trips, counted on the wire, and that the reads it
folds together still read what they read one by one.

A real redis-server behind a counting proxy (``bench/_redis_trips.py``), the worker's real
``Sender``, and a real HTTP server standing in for UCWA (201 with a Location, as
``startMessaging`` and ``sendMessage`` answer).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from bench._redis_trips import CountingProxy
from bridge.config.redis_conn import read_and_watch
from bridge.outbound.intake import Intake
from bridge.outbound.messages import MessageRecord, MessageStatus, MessageStore, RecipientQueue
from bridge.outbound.outcomes import Outbound
from bridge.outbound.sender import Sender
from bridge.session.client import UcwaClient
from bridge.session.conversations import Conversation, ConversationRegistry, conversation_id
from bridge.session.transport import DeliveryUnknown, NotSent
from bridge.ucwa.auth import Credentials
from bridge.ucwa.errors import UcwaError
from tests.outbound.fake_ucwa import APP, Ucwa, publish_session

ACCOUNT = "sip:bot@contoso.com"
ALICE = "sip:alice@contoso.com"
CONV = f"{APP}/communication/conversations/7"
# The most round trips a send job's own work takes (RQ's bookkeeping apart): the lock with the
# record and session; the line's head with the conversation and the claim's WATCH with its GET;
# the claim's MULTI … EXEC, with the record's WATCH and GET for the step after the POST; that
# step's MULTI … EXEC, with its watchdog, the lock's release and, warm, the Location race.
SEND_ROUND_TRIPS = 4


def open_conversation(client: redis.Redis, base: str) -> Conversation:
    conv = Conversation(
        id=conversation_id(ACCOUNT, base + CONV),
        href=base + CONV,
        generation=1,
        remote=ALICE,
        state="Connected",
        messaging_state="Connected",
        links={"sendMessage": base + CONV + "/messaging/sendMessage"},
        formats=["Plain"],
        created_at=time.time(),
        last_activity=time.time(),
    )
    with client.pipeline() as pipe:
        ConversationRegistry(client, ACCOUNT).save(conv, pipe)
        pipe.execute()
    return conv


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_a_send_job_takes_at_most_four_round_trips(
    redis_client: redis.Redis, redis_proxy: CountingProxy, ucwa: Ucwa, warm: bool
) -> None:
    publish_session(redis_client, ucwa, ACCOUNT)
    conv = open_conversation(redis_client, ucwa.base) if warm else None
    record = Intake(redis_client, MessageStore(redis_client)).submit(
        MessageRecord.new(to=ALICE, text="hello", validity_s=300)
    )
    through = redis.Redis.from_url(redis_proxy.url())
    sender = Sender(
        through,
        UcwaClient(Credentials(ACCOUNT, "pw")),
        ACCOUNT,
        outbound=Outbound(through, MessageStore(through)),
    )
    # A first job (to someone else) loads the scripts, as the worker's first job does.
    first = Intake(redis_client, MessageStore(redis_client)).submit(
        MessageRecord.new(to="sip:bob@contoso.com", text="first", validity_s=300)
    )
    assert sender.run(first.id) == "invited"
    ucwa.paths.clear()
    redis_proxy.reset()

    step = sender.run(record.id)

    trips = redis_proxy.reset().round_trips
    assert step == ("posted" if warm else "invited")
    [posted] = ucwa.paths
    assert urlsplit(posted).path.endswith("sendMessage" if warm else "startMessaging")
    stored = MessageStore(redis_client).get(record.id)
    assert stored.status is MessageStatus.SENDING
    assert stored.step == ("posted" if warm else "invited")
    if conv is not None:
        assert stored.conversation_href == conv.href
    assert not redis_client.exists(f"lock:send:{record.id}")
    assert trips <= SEND_ROUND_TRIPS, trips


def one_to_send(client: redis.Redis, ucwa: Ucwa) -> tuple[Outbound, MessageRecord, Sender]:
    """A session, a message to Alice accepted, and a worker's sender for it."""
    publish_session(client, ucwa, ACCOUNT)
    outbound = Outbound(client, MessageStore(client))
    record = Intake(client, outbound.store).submit(
        MessageRecord.new(to=ALICE, text="hello", validity_s=300)
    )
    sender = Sender(client, UcwaClient(Credentials(ACCOUNT, "pw")), ACCOUNT, outbound=outbound)
    return outbound, record, sender


def test_a_cancel_between_the_claims_watch_and_its_exec_wins_and_nothing_is_posted(
    redis_client: redis.Redis, ucwa: Ucwa
) -> None:
    """The claim's WATCH now goes out with the line's head, before the worker plans its POST:
    a cancel committed in between must still abort the claim."""
    outbound, record, sender = one_to_send(redis_client, ucwa)
    plan = sender._plan

    def cancelled_while_planning(*args: Any) -> Any:
        outbound.cancel(record.id, "changed my mind")
        return plan(*args)

    sender._plan = cancelled_while_planning  # type: ignore[method-assign]

    assert sender.run(record.id) == "cancelled"

    assert ucwa.paths == []
    stored = MessageStore(redis_client).get(record.id)
    assert stored.status is MessageStatus.CANCELLED and stored.attempts == 0
    assert not redis_client.exists(f"lock:send:{record.id}")


def test_a_step_that_fails_to_record_still_lets_the_send_lock_go(
    redis_client: redis.Redis, ucwa: Ucwa
) -> None:
    """The lock now goes with the step after the POST, in its transaction; when that step
    cannot be written, the run still releases the lock as it ends."""
    outbound, record, sender = one_to_send(redis_client, ucwa)

    def broken(*args: Any) -> None:
        raise RuntimeError("the watchdog cannot be scheduled")

    outbound.watch_outcome = broken  # type: ignore[method-assign]

    with pytest.raises(RuntimeError):
        sender.run(record.id)

    assert len(ucwa.paths) == 1
    assert MessageStore(redis_client).get(record.id).step == "posting_cold"
    assert not redis_client.exists(f"lock:send:{record.id}")


def test_a_send_lock_another_run_holds_by_then_is_left_to_it(
    redis_client: redis.Redis, ucwa: Ucwa
) -> None:
    """The step after the POST releases the lock only while it holds this run's token: one
    that expired and was taken by another run meanwhile stays that run's."""
    _, record, sender = one_to_send(redis_client, ucwa)
    plan = sender._plan

    def lock_taken_while_planning(*args: Any) -> Any:
        redis_client.set(f"lock:send:{record.id}", "another run", ex=60)
        return plan(*args)

    sender._plan = lock_taken_while_planning  # type: ignore[method-assign]

    assert sender.run(record.id) == "invited"

    assert redis_client.get(f"lock:send:{record.id}") == b"another run"


def test_a_second_run_of_a_job_steps_aside_after_one_round_trip(
    redis_client: redis.Redis, redis_proxy: CountingProxy, ucwa: Ucwa
) -> None:
    publish_session(redis_client, ucwa, ACCOUNT)
    record = Intake(redis_client, MessageStore(redis_client)).submit(
        MessageRecord.new(to=ALICE, text="hello", validity_s=300)
    )
    redis_client.set(f"lock:send:{record.id}", "the other run", ex=60)
    through = redis.Redis.from_url(redis_proxy.url())
    sender = Sender(through, UcwaClient(Credentials(ACCOUNT, "pw")), ACCOUNT)
    through.ping()
    redis_proxy.reset()

    assert sender.run(record.id) == "busy"

    assert redis_proxy.reset().round_trips == 1
    assert ucwa.paths == []
    assert redis_client.get(f"lock:send:{record.id}") == b"the other run"


# -- the folded reads read what the single reads did ----------------------------------------------


@pytest.mark.parametrize("case", ["by-id", "by-remote", "unknown-id", "expired-record", "none"])
def test_one_lookup_finds_what_get_and_by_remote_find(redis_client: redis.Redis, case: str) -> None:
    registry = ConversationRegistry(redis_client, ACCOUNT)
    conv = open_conversation(redis_client, "https://lync.contoso.com")
    cid: str | None = {"by-id": conv.id, "unknown-id": "conv_" + "0" * 24}.get(case)
    remote = ALICE if case in ("by-remote", "expired-record") else "sip:nobody@contoso.com"
    if case == "expired-record":
        redis_client.delete(f"conv:{conv.id}")
    expected = registry.get(cid) if cid else registry.by_remote(remote)

    with redis_client.pipeline() as pipe:  # as the worker sends it: before its claim's WATCH
        [answer], _ = read_and_watch(pipe, [registry.lookup_command(cid, remote)], "msg:x")

    assert registry.looked_up(answer) == expected
    assert (expected is not None) == (case in ("by-id", "by-remote"))


def test_dropping_the_head_answers_the_next_one(redis_client: redis.Redis) -> None:
    line = RecipientQueue(redis_client)
    redis_client.rpush("rcpt:bob:fifo", "m1", "m2")

    assert line.pop_then_head("bob", "m2") == (False, "m1")  # not the head: stays
    assert line.pop_then_head("bob", "m1") == (True, "m2")
    assert line.pop_then_head("bob", "m2") == (True, None)
    assert line.head("bob") is None


# -- the record watched again with the claim ---------------------------------------------------


def test_an_outcome_settled_during_the_post_is_kept_by_the_step_after_it(
    redis_client: redis.Redis, ucwa: Ucwa
) -> None:
    """The claim leaves the record watched for the step after the POST, with what it read then.
    The poller settling the message while the POST is out (its event came first) changes the
    record after that read: the step's transaction must abort and read it again, never write
    the step over the delivered message."""
    _, record, sender = one_to_send(redis_client, ucwa)
    request = sender.ucwa.request

    def settled_meanwhile(*args: Any, **kwargs: Any) -> Any:
        answer = request(*args, **kwargs)
        Outbound(redis_client, MessageStore(redis_client)).settle(record.id, True)
        return answer

    sender.ucwa.request = settled_meanwhile  # type: ignore[method-assign]

    sender.run(record.id)

    stored = MessageStore(redis_client).get(record.id)
    assert stored.status is MessageStatus.DELIVERED, stored
    assert len(ucwa.paths) == 1
    assert not redis_client.exists(f"lock:send:{record.id}")


def _answered_without_location(*args: Any, **kwargs: Any) -> Any:
    class Answer:
        def header(self, name: str) -> None:
            return None

    return Answer()


def _raising(error: Exception) -> Callable[..., Any]:
    def request(*args: Any, **kwargs: Any) -> Any:
        raise error

    return request


@pytest.mark.parametrize(
    "answer",
    [
        None,
        _answered_without_location,
        _raising(NotSent("refused")),
        _raising(DeliveryUnknown("no answer")),
        _raising(UcwaError("a 500", status=500)),
    ],
    ids=["answered", "no-location", "not-sent", "delivery-unknown", "ucwa-error"],
)
def test_no_connection_is_left_watching_the_record_whatever_the_post_did(
    redis_client: redis.Redis, ucwa: Ucwa, answer: Callable[..., Any] | None
) -> None:
    """Every way out of the POST gives the connection the claim left watching back to the pool
    unwatched (or lets it go): a later transaction on any pooled connection is not aborted by a
    change of the record it knows nothing of."""
    outbound, record, sender = one_to_send(redis_client, ucwa)
    client = sender.redis
    if answer is not None:
        sender.ucwa.request = answer  # type: ignore[method-assign]

    sender.run(record.id)

    pool = client.connection_pool
    assert not pool._in_use_connections  # type: ignore[attr-defined]
    redis_client.set(f"msg:{record.id}:touched", 1)
    outbound.store.update(record.id, lambda r: replace(r, attempts=r.attempts))  # a write
    connections = [pool.get_connection() for _ in range(len(pool._available_connections))]  # type: ignore[attr-defined]
    try:
        for connection in connections:
            connection.send_command("MULTI")
            connection.send_command("SET", "unrelated", "1")
            connection.send_command("EXEC")
            replies = [connection.read_response() for _ in range(3)]
            assert replies[-1] is not None, "a transaction aborted by a stale WATCH"
    finally:
        for connection in connections:
            pool.release(connection)

"""Recipient lines and the keys around them, on real Redis: one line per remote person however
a message addresses them, every per-recipient key with a TTL, a late success after an unknown
outcome, and the conversation a cold send opened recorded on the message.
"""

from __future__ import annotations

import redis
from rq import Queue

from bridge.outbound.intake import SEND_QUEUE, Intake
from bridge.outbound.messages import (
    OUTCOME_UNKNOWN,
    MessageError,
    MessageRecord,
    MessageStatus,
    MessageStore,
)
from bridge.outbound.outcomes import Outbound
from bridge.outbound.sender import SendSettings
from bridge.session.conversations import Conversation, ConversationRegistry, conversation_id

ACCOUNT = "sip:bot@contoso.com"
ALICE = "sip:alice@contoso.com"
CONV_HREF = "https://ucwa.example/ucwa/v1/applications/1/communication/conversations/7"


def known_conversation(client: redis.Redis, remote: str = "sip:Alice@Contoso.com") -> str:
    registry = ConversationRegistry(client, ACCOUNT)
    conv = Conversation(id=registry.id_for(CONV_HREF), href=CONV_HREF, generation=1, remote=remote)
    with client.pipeline() as pipe:
        registry.save(conv, pipe)
        pipe.execute()
    return conv.id


def accept(client: redis.Redis, **fields: object) -> MessageRecord:
    record = MessageRecord.new(text="x", validity_s=300, **fields)  # type: ignore[arg-type]
    return Intake(client, MessageStore(client)).submit(record)


def test_a_reply_by_conversation_joins_the_line_of_the_person_it_is_with(
    redis_client: redis.Redis,
) -> None:
    conv = known_conversation(redis_client)
    by_to = accept(redis_client, to=ALICE)
    by_conversation = accept(redis_client, conversation=conv)

    line = redis_client.lrange(f"rcpt:{ALICE}:fifo", 0, -1)
    assert line == [by_to.id.encode(), by_conversation.id.encode()]
    assert by_conversation.recipient == ALICE
    assert MessageStore(redis_client).get(by_conversation.id).recipient == ALICE
    assert redis_client.keys("rcpt:conv:*") == []


def test_an_unknown_or_malformed_conversation_is_never_read_from_an_index_key(
    redis_client: redis.Redis,
) -> None:
    known_conversation(redis_client)
    registry = ConversationRegistry(redis_client, ACCOUNT)
    for name in ("active", "href:" + CONV_HREF, "remote:" + ALICE.lower(), "conv_" + "0" * 24):
        assert registry.get(name) is None
    record = accept(redis_client, conversation="conv_" + "0" * 24)
    assert record.recipient == "conv:conv_" + "0" * 24


def test_every_per_recipient_and_per_message_key_expires(redis_client: redis.Redis) -> None:
    conv = known_conversation(redis_client)
    for n in range(3):
        accept(redis_client, to=f"sip:person{n}@contoso.com")
    accept(redis_client, conversation=conv)
    accept(redis_client, conversation="conv_" + "1" * 24)
    outbound = Outbound(redis_client, account=ACCOUNT)
    outbound.enqueue_send(accept(redis_client, to=ALICE).id)
    never = [
        key.decode()
        for key in redis_client.scan_iter(match="*")
        if redis_client.ttl(key) == -1 and not key.startswith(b"rq:")
    ]
    assert never == []


def test_a_success_reported_after_an_unknown_outcome_makes_the_message_delivered(
    redis_client: redis.Redis,
) -> None:
    staged: list[MessageRecord] = []
    outbound = Outbound(
        redis_client, on_final=lambda pipe, record: staged.append(record), account=ACCOUNT
    )
    record = accept(redis_client, to=ALICE)
    outbound.store.transition(record.id, MessageStatus.SENDING)
    unknown = MessageError(OUTCOME_UNKNOWN, "no answer")
    outbound.finalize(record.id, MessageStatus.FAILED, unknown)

    late = outbound.settle(record.id, True, conversation_href=CONV_HREF)

    assert late is not None and late.status == MessageStatus.DELIVERED
    assert late.error is None and late.previous_error == unknown
    assert list(late.history) == ["queued", "sending", "failed", "delivered"]
    assert [r.status for r in staged] == [MessageStatus.FAILED, MessageStatus.DELIVERED]
    # any other failure stays final: a late success cannot rewrite it
    other = accept(redis_client, to="sip:bob@contoso.com")
    outbound.store.transition(other.id, MessageStatus.SENDING)
    outbound.finalize(other.id, MessageStatus.FAILED, MessageError("declined", "no"))
    assert outbound.settle(other.id, True).status == MessageStatus.FAILED  # type: ignore[union-attr]


def test_the_conversation_a_cold_send_opened_is_recorded_on_the_message(
    redis_client: redis.Redis,
) -> None:
    outbound = Outbound(redis_client, account=ACCOUNT)
    record = accept(redis_client, to=ALICE)
    outbound.store.transition(record.id, MessageStatus.SENDING)

    outbound.settle(record.id, True, conversation_href=CONV_HREF)

    final = outbound.store.get(record.id)
    assert final.conversation == conversation_id(ACCOUNT, CONV_HREF)
    assert final.public_view()["conversation"] == final.conversation
    assert final.recipient == ALICE  # its line is unchanged


def test_the_send_lock_outlives_any_one_attempt() -> None:
    for timeout in (1, 30, 90, 600):
        knobs = SendSettings(ucwa_timeout_s=timeout)
        # a POST, a 401 challenge's token grant and the retried POST, each up to the deadline
        assert knobs.send_lock_ttl_s > 3 * timeout


def test_no_send_job_is_left_without_its_queue(redis_client: redis.Redis) -> None:
    accept(redis_client, to=ALICE)
    assert Queue(SEND_QUEUE, connection=redis_client).count == 1

"""MessageStore: the status state machine, history, and lossless concurrent updates."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
import redis

from bridge.outbound.intake import Intake
from bridge.outbound.messages import (
    IllegalTransition,
    MessageError,
    MessageNotFound,
    MessageRecord,
    MessageStatus,
    MessageStore,
    UcwaFault,
)

S = MessageStatus


@pytest.fixture()
def store(redis_client: redis.Redis) -> MessageStore:
    return MessageStore(redis_client, record_ttl_s=3600)


@pytest.fixture()
def message_id(redis_client: redis.Redis, store: MessageStore) -> str:
    record = MessageRecord.new(to="sip:alice@contoso.com", text="hi", validity_s=60)
    return Intake(redis_client, store).submit(record).id


def test_happy_path_keeps_history_in_order(store: MessageStore, message_id: str) -> None:
    store.transition(message_id, S.SENDING, step="sending", attempts=1)
    store.transition(message_id, S.DELIVERED, step="done", message_href="/m/1")

    record = store.get(message_id)
    assert record.status is S.DELIVERED
    assert list(record.history) == ["queued", "sending", "delivered"]
    assert record.history["queued"] <= record.history["sending"] <= record.history["delivered"]
    assert (record.step, record.message_href, record.attempts) == ("done", "/m/1", 1)


@pytest.mark.parametrize("final", [S.DELIVERED, S.FAILED, S.EXPIRED])
def test_terminal_states_are_final(store: MessageStore, message_id: str, final: S) -> None:
    store.transition(message_id, S.SENDING)
    store.transition(message_id, final)

    for target in S:
        with pytest.raises(IllegalTransition):
            store.transition(message_id, target)
    assert store.get(message_id).status is final


@pytest.mark.parametrize(
    ("path", "refused"),
    [((), S.DELIVERED), ((), S.QUEUED), ((S.SENDING,), S.SENDING), ((S.SENDING,), S.QUEUED)],
)
def test_illegal_transitions_are_refused(
    store: MessageStore, message_id: str, path: tuple[S, ...], refused: S
) -> None:
    for status in path:
        store.transition(message_id, status)
    before = store.get(message_id)

    with pytest.raises(IllegalTransition):
        store.transition(message_id, refused)

    assert store.get(message_id) == before


def test_queued_may_fail_or_expire_directly(store: MessageStore, message_id: str) -> None:
    error = MessageError("expired", "validity elapsed before delivery")
    record = store.transition(message_id, S.EXPIRED, error=error)
    assert record.status is S.EXPIRED and store.get(message_id).error == error


def test_concurrent_updates_lose_no_write(redis_url: str, message_id: str) -> None:
    rounds = 100
    errors: list[BaseException] = []

    def bump() -> None:
        own = MessageStore(redis.Redis.from_url(redis_url))
        try:
            for _ in range(rounds):
                own.update(message_id, lambda r: replace(r, attempts=r.attempts + 1))
        except Exception as exc:  # a thread's exception would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=bump) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert MessageStore(redis.Redis.from_url(redis_url)).get(message_id).attempts == 2 * rounds


def test_concurrent_final_transitions_pick_one_winner(redis_url: str, message_id: str) -> None:
    MessageStore(redis.Redis.from_url(redis_url)).transition(message_id, S.SENDING)
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def finish(status: S) -> None:
        own = MessageStore(redis.Redis.from_url(redis_url))
        barrier.wait()
        try:
            own.transition(message_id, status)
            outcomes.append(status.value)
        except IllegalTransition:
            outcomes.append("refused")

    threads = [threading.Thread(target=finish, args=(s,)) for s in (S.DELIVERED, S.FAILED)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes).count("refused") == 1
    winner = next(o for o in outcomes if o != "refused")
    assert MessageStore(redis.Redis.from_url(redis_url)).get(message_id).status.value == winner


def test_update_keeps_the_record_ttl(
    store: MessageStore, message_id: str, redis_client: redis.Redis
) -> None:
    store.transition(message_id, S.SENDING)
    assert 3500 < redis_client.ttl(f"msg:{message_id}") <= 3600


def test_unknown_id(store: MessageStore) -> None:
    with pytest.raises(MessageNotFound):
        store.get("msg_missing")
    with pytest.raises(MessageNotFound):
        store.transition("msg_missing", S.SENDING)


def test_transition_does_not_set_bookkeeping_fields(store: MessageStore, message_id: str) -> None:
    with pytest.raises(ValueError):
        store.transition(message_id, S.SENDING, history={})


def test_record_json_round_trip() -> None:
    record = replace(
        MessageRecord.new(conversation="c1", html="<p>x</p>", subject="s", validity_s=5, now=0),
        status=S.FAILED,
        error=MessageError("declined", "no", UcwaFault("Forbidden", None, "m")),
        invitation_href="/inv/1",
        sequence=7,
    )

    assert MessageRecord.from_json(record.to_json()) == record
    assert record.expires_at == "1970-01-01T00:00:05.000Z"
    assert record.is_expired(now=5) and not record.is_expired(now=4.9)


def test_message_ids_are_url_safe_unique_and_short() -> None:
    ids = {MessageRecord.new(to="sip:a@b.c", text="x", validity_s=1).id for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) <= 50 and i.replace("_", "").isalnum() for i in ids)

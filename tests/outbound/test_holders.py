"""A send lock left by a worker process that is gone is taken over at once; one held by a live
process, or by a holder that names no process, is not. Real redis-server; a real HTTP server
stands in for UCWA and counts the POSTs."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
import redis

from bridge.outbound.holders import (
    ALIVE_PREFIX,
    HELD_BY_THE_LIVING,
    SEPARATOR,
    ProcessLiveness,
    queue_lock,
)
from bridge.outbound.intake import Intake
from bridge.outbound.line_sweep import _stalled
from bridge.outbound.messages import MessageRecord, MessageStore
from bridge.outbound.outcomes import Outbound
from bridge.outbound.sender import Sender
from bridge.session.client import UcwaClient
from bridge.ucwa.auth import Credentials
from tests.outbound.fake_ucwa import Ucwa, publish_session

ACCOUNT = "sip:bot@contoso.com"
ALICE = "sip:alice@contoso.com"
LOCK = "lock:send:m1"


def alive(client: redis.Redis) -> ProcessLiveness:
    process = ProcessLiveness(client, ttl_s=30, every_s=10)
    process.renew()
    return process


def gone(client: redis.Redis) -> ProcessLiveness:
    """A process that named itself in locks and no longer says it is alive."""
    process = alive(client)
    client.delete(process.key)
    return process


def held_by_the_living(client: redis.Redis, lock: str) -> bool:
    return bool(client.eval(HELD_BY_THE_LIVING, 1, lock, ALIVE_PREFIX, SEPARATOR))


def take(client: redis.Redis, token: bytes) -> tuple[bytes, int]:
    """What a run's first round trip does with the lock: (its holder after, taken over)."""
    with client.pipeline(transaction=False) as pipe:
        queue_lock(pipe, LOCK, token, 60)
        [(holder, taken_over)] = pipe.execute()
    return holder, taken_over


# -- the scripts ---------------------------------------------------------------------------------


def test_a_free_lock_is_taken(redis_client: redis.Redis) -> None:
    assert take(redis_client, b"mine") == (b"mine", 0)
    assert 59_000 < redis_client.pttl(LOCK) <= 60_000
    assert take(redis_client, b"mine") == (b"mine", 0)  # a retry finds it its own


def test_a_lock_whose_process_is_gone_is_taken_over(redis_client: redis.Redis) -> None:
    seen = gone(redis_client).token()
    redis_client.set(LOCK, seen, px=150_000)
    assert not held_by_the_living(redis_client, LOCK)
    assert take(redis_client, b"mine") == (b"mine", 1)
    assert redis_client.get(LOCK) == b"mine"
    assert 59_000 < redis_client.pttl(LOCK) <= 60_000


def test_a_lock_of_a_live_process_is_not(redis_client: redis.Redis) -> None:
    seen = alive(redis_client).token()
    redis_client.set(LOCK, seen, px=150_000)
    assert held_by_the_living(redis_client, LOCK)
    assert take(redis_client, b"mine") == (seen, 0)
    assert redis_client.get(LOCK) == seen


def test_a_lock_that_names_no_process_is_only_given_up_by_its_ttl(
    redis_client: redis.Redis,
) -> None:
    redis_client.set(LOCK, b"0123456789abcdef", px=150_000)
    assert held_by_the_living(redis_client, LOCK)
    assert take(redis_client, b"mine") == (b"0123456789abcdef", 0)


def test_a_free_lock_is_not_held(redis_client: redis.Redis) -> None:
    assert not held_by_the_living(redis_client, LOCK)


def test_a_process_is_alive_while_it_renews_and_gone_soon_after_it_stops(
    redis_client: redis.Redis,
) -> None:
    process = ProcessLiveness(redis_client, ttl_s=2.0, every_s=0.2)
    assert SEPARATOR.encode() not in process.token()  # not alive yet: a plain lock
    process.start()
    deadline = time.monotonic() + 5
    while SEPARATOR.encode() not in (token := process.token()):  # its first renewal is done
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert redis_client.exists(process.key)
    redis_client.set(LOCK, token, px=150_000)
    time.sleep(2.5)  # longer than the key's TTL: only the renewals keep it
    assert held_by_the_living(redis_client, LOCK)
    process.stop()
    time.sleep(2.5)
    assert not held_by_the_living(redis_client, LOCK)
    assert SEPARATOR not in process.name and token.startswith(process.name.encode())


# -- a run that meets such a lock ----------------------------------------------------------------


class Parts:
    def __init__(self, client: redis.Redis, ucwa: Ucwa) -> None:
        self.client = client
        self.record = Intake(client, MessageStore(client)).submit(
            MessageRecord.new(to=ALICE, text="x", validity_s=300)
        )
        publish_session(client, ucwa, ACCOUNT)
        self.sender = Sender(
            client,
            UcwaClient(Credentials(ACCOUNT, "pw")),
            ACCOUNT,
            outbound=Outbound(client, MessageStore(client)),
            liveness=alive(client),
        )
        self.lock = f"lock:send:{self.record.id}"


@pytest.fixture()
def parts(redis_client: redis.Redis, ucwa: Ucwa) -> Parts:
    return Parts(redis_client, ucwa)


def test_a_run_takes_over_the_lock_of_a_worker_that_died_waiting_and_posts_once(
    parts: Parts, ucwa: Ucwa
) -> None:
    """The worker took the job and the lock, waited for its slot, and was killed."""
    parts.client.set(parts.lock, gone(parts.client).token(), px=150_000)
    assert parts.sender.run(parts.record.id) == "invited"
    assert ucwa.posts == 1
    assert parts.client.get(parts.lock) is None  # given back as any run's lock is
    assert parts.sender.run(parts.record.id) == "waiting"  # and never posted again
    assert ucwa.posts == 1


def test_a_run_steps_aside_from_the_lock_of_a_live_worker(parts: Parts, ucwa: Ucwa) -> None:
    held = alive(parts.client).token()
    parts.client.set(parts.lock, held, px=150_000)
    assert parts.sender.run(parts.record.id) == "busy"
    assert ucwa.posts == 0
    assert parts.client.get(parts.lock) == held


def test_the_sweep_restarts_a_head_left_mid_post_by_a_worker_that_is_gone(
    parts: Parts,
) -> None:
    """Mid-POST: the record is claimed. Its lock, held by a live worker, keeps the sweep away;
    once that worker is gone the head is stalled, as when the lock has expired."""
    record = MessageStore(parts.client).get(parts.record.id)
    posting = replace(record, step="posting_cold", attempt_at=time.time() - 100)
    suspects = [(ALICE, posting)]
    parts.client.set(parts.lock, alive(parts.client).token(), px=150_000)
    assert _stalled(parts.client, suspects, time.time()) == []
    parts.client.set(parts.lock, gone(parts.client).token(), px=150_000)
    assert _stalled(parts.client, suspects, time.time()) == [ALICE]
    parts.client.delete(parts.lock)
    assert _stalled(parts.client, suspects, time.time()) == [ALICE]

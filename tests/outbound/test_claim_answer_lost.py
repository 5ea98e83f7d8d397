"""A worker's claim to post whose answer Redis lost (the server ran the transaction and went
away before replying): nothing was posted, so the message must neither end ``outcome_unknown``
nor go out twice. Likewise the run's send lock: a SET NX whose answer was lost must neither
make the run step aside from its own lock nor leave the message locked for the lock's TTL.

Real redis-server behind a proxy that runs the claim's MULTI … EXEC, drops its reply and cuts
every connection for a while; a real HTTP server stands in for UCWA and counts the POSTs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import redis

from bridge.config.redis_conn import connect
from bridge.outbound.intake import Intake
from bridge.outbound.messages import MessageRecord, MessageStatus, MessageStore
from bridge.outbound.outcomes import Outbound
from bridge.outbound.sender import Sender
from bridge.session.client import UcwaClient
from bridge.ucwa.auth import Credentials
from tests.outbound.fake_ucwa import Ucwa, publish_session
from tests.redis_cutting_proxy import CuttingProxy

ACCOUNT = "sip:bot@contoso.com"
ALICE = "sip:alice@contoso.com"


def ready(client: redis.Redis, ucwa: Ucwa) -> None:
    publish_session(client, ucwa, ACCOUNT)


def claim_of(data: bytes) -> bool:
    return b"EXEC" in data and b"posting_" in data


class Parts:
    """A queued message at the head of its line, a published session, and a worker's sender
    whose Redis connections go through a cutting proxy."""

    def __init__(self, redis_url: str, client: redis.Redis, ucwa: Ucwa, every: bool) -> None:
        port = urlsplit(redis_url).port
        assert port is not None
        self.client = client
        self.proxy = CuttingProxy(port, down_s=0.8, every=every)
        through = connect(self.proxy.url())  # as every role connects: quick retries
        self.record = Intake(client, MessageStore(client)).submit(
            MessageRecord.new(to=ALICE, text="x", validity_s=300)
        )
        ready(client, ucwa)
        self.sender = Sender(
            through,
            UcwaClient(Credentials(ACCOUNT, "pw")),
            ACCOUNT,
            outbound=Outbound(through, MessageStore(through)),
        )

    def stored(self) -> tuple[MessageStatus, str, int]:
        record = MessageStore(self.client).get(self.record.id)
        return record.status, record.step, record.attempts


@pytest.fixture()
def parts(
    request: pytest.FixtureRequest, redis_url: str, redis_client: redis.Redis, ucwa: Ucwa
) -> Iterator[Parts]:
    made = Parts(redis_url, redis_client, ucwa, getattr(request, "param", True))
    yield made
    made.proxy.close()


@pytest.mark.parametrize("parts", [False], indirect=True, ids=["one-connection-dropped"])
def test_a_claim_whose_answer_was_lost_is_found_by_its_retry_and_posted_once(
    parts: Parts, ucwa: Ucwa
) -> None:
    parts.proxy.cut_when(claim_of)

    assert parts.sender.run(parts.record.id) == "invited"

    assert parts.proxy.cuts == 1
    assert ucwa.posts == 1
    assert parts.stored() == (MessageStatus.SENDING, "invited", 1)


def test_a_claim_whose_answer_was_lost_is_undone_and_the_next_run_posts_once(
    parts: Parts, ucwa: Ucwa
) -> None:
    parts.proxy.cut_when(claim_of)

    with pytest.raises(redis.ConnectionError):  # Redis died, and stayed away past the retries
        parts.sender.run(parts.record.id)

    assert parts.proxy.cuts == 1
    assert ucwa.posts == 0
    assert parts.stored() == (MessageStatus.QUEUED, "queued", 0)
    assert "sending" not in MessageStore(parts.client).get(parts.record.id).history
    time.sleep(parts.proxy.down_s)
    assert parts.sender.run(parts.record.id) == "invited"
    assert ucwa.posts == 1
    assert parts.stored() == (MessageStatus.SENDING, "invited", 1)


def test_a_claim_that_never_reached_redis_leaves_the_record_as_it_was(
    parts: Parts, ucwa: Ucwa
) -> None:
    # Cut on the claim's WATCH: the transaction itself never runs.
    parts.proxy.cut_when(lambda data: b"WATCH" in data and parts.record.id.encode() in data)

    with pytest.raises(redis.ConnectionError):
        parts.sender.run(parts.record.id)

    assert ucwa.posts == 0
    assert parts.stored() == (MessageStatus.QUEUED, "queued", 0)


def lock_of(data: bytes) -> bool:
    return b"lock:send:" in data and b"NX" in data


@pytest.mark.parametrize("parts", [False], indirect=True, ids=["one-connection-dropped"])
def test_a_send_lock_whose_answer_was_lost_is_found_by_the_retry(parts: Parts, ucwa: Ucwa) -> None:
    """The retried SET NX finds the lock taken, by this very run: it goes on and posts once."""
    parts.proxy.cut_when(lock_of)

    assert parts.sender.run(parts.record.id) == "invited"

    assert parts.proxy.cuts == 1
    assert ucwa.posts == 1
    assert parts.stored() == (MessageStatus.SENDING, "invited", 1)
    assert not parts.client.exists(f"lock:send:{parts.record.id}")


def test_a_send_lock_whose_answer_was_lost_is_given_back_once_redis_answers(
    parts: Parts, ucwa: Ucwa
) -> None:
    """Redis took the lock and went away past the retries: the run gives the lock back once
    Redis is back, so the next run posts at once instead of stepping aside for the lock's
    TTL (150 s by default), and the message's line with it."""
    parts.proxy.cut_when(lock_of)

    with pytest.raises(redis.ConnectionError):
        parts.sender.run(parts.record.id)

    assert parts.proxy.cuts == 1
    assert not parts.client.exists(f"lock:send:{parts.record.id}")
    assert ucwa.posts == 0
    assert parts.sender.run(parts.record.id) == "invited"
    assert ucwa.posts == 1


@pytest.mark.parametrize("cut", ["lock", "claim"])
def test_a_stop_ends_a_wait_for_redis_at_once(parts: Parts, ucwa: Ucwa, cut: str) -> None:
    """Redis goes away for good as a run takes its lock or writes its claim, and the worker is
    asked to stop while the run waits for Redis to give the lock back or undo the claim: the
    run ends at once, not after ``LOCK_RELEASE_WAIT_S`` (20 s), which held a worker's SIGTERM
    that long. Nothing went out."""
    import threading

    from bridge.outbound.sender import LOCK_RELEASE_WAIT_S

    stop = threading.Event()
    parts.sender.stop = stop
    parts.proxy.down_s = 60.0  # away for longer than any wait
    parts.proxy.cut_when(lock_of if cut == "lock" else claim_of)
    threading.Timer(1.0, stop.set).start()
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        parts.sender.run(parts.record.id)
    took = time.monotonic() - started
    assert parts.proxy.cuts == 1
    assert ucwa.posts == 0
    assert stop.is_set() and took < 1.0 + 2.5 < LOCK_RELEASE_WAIT_S, took

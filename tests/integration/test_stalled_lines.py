"""The poller's sweep restarts a person's line only when nothing will run its head: a head whose
send job still waits in the queue (a backlog longer than the sweep's staleness) is left to it;
one whose job is gone, failed, or started long ago without a claim is started again. Real Redis,
real RQ jobs, the poller's own sweep.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import redis
from rq import Queue
from rq.job import Job

from bench._redis_trips import CountingProxy
from bridge.config.redis_text import text
from bridge.outbound import line_sweep
from bridge.outbound.intake import SEND_QUEUE, Intake, send_job_id
from bridge.outbound.messages import MessageRecord, MessageStore
from bridge.ucwa.auth import Credentials
from workers.poller import Poller, PollerSettings

SETTINGS = PollerSettings(sweep_s=1.0)
PEOPLE = [f"sip:p{n}@contoso.com" for n in range(3)]
LONG_AGO = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()


def waiting_heads(client: redis.Redis) -> list[MessageRecord]:
    """A message to each person, accepted five minutes ago, its send job still in the queue."""
    store = MessageStore(client)
    heads = []
    for person in PEOPLE:
        record = Intake(client, store).submit(
            MessageRecord.new(to=person, text="x", validity_s=900)
        )
        heads.append(store.update(record.id, lambda r: replace(r, history={"queued": LONG_AGO})))
    return heads


def sweep(client: redis.Redis) -> None:
    poller = Poller(
        client, Credentials("sip:bot@contoso.com", "pw"), "http://127.0.0.1:9/", SETTINGS
    )
    poller._sweep(None)  # type: ignore[arg-type]  # no conversation of its own to stop


def queued_jobs(client: redis.Redis) -> list[str]:
    return Queue(SEND_QUEUE, connection=client).get_job_ids()


def test_heads_whose_jobs_still_wait_are_left_to_them(redis_client: redis.Redis) -> None:
    heads = waiting_heads(redis_client)
    before = queued_jobs(redis_client)
    assert sorted(before) == sorted(send_job_id(h.id) for h in heads)

    sweep(redis_client)
    sweep(redis_client)

    assert queued_jobs(redis_client) == before  # no second job for a message that waits


@pytest.mark.parametrize(
    "how",
    ["deleted", "failed", "started long ago", "taken, never started", "popped, never started"],
)
def test_heads_whose_job_will_not_run_them_are_started_again(
    redis_client: redis.Redis, how: str
) -> None:
    heads = waiting_heads(redis_client)
    lost = heads[0]
    job = Job.fetch(send_job_id(lost.id), connection=redis_client)
    Queue(SEND_QUEUE, connection=redis_client).remove(job.id)
    if how == "deleted":
        job.delete()
    elif how == "failed":
        redis_client.hset(job.key, "status", "failed")
    elif how == "taken, never started":
        # a worker moved it to RQ's intermediate list and died before starting it: its state
        # still says queued
        queue = Queue(SEND_QUEUE, connection=redis_client)
        redis_client.rpush(queue.intermediate_queue_key, job.id)
    elif how == "popped, never started":
        # a worker of two queues popped it (BLPOP: no intermediate list) and lost Redis before
        # writing its start: off the queue, its state still says queued
        pass
    else:  # a worker took it and was killed before claiming the message
        redis_client.hset(
            job.key,
            mapping={"status": "started", "started_at": LONG_AGO.replace("+00:00", "Z")},
        )

    sweep(redis_client)

    restarted = [j for j in queued_jobs(redis_client) if lost.id in j]
    assert len(restarted) == 1 and restarted[0] != send_job_id(lost.id), queued_jobs(redis_client)
    others = {send_job_id(h.id) for h in heads[1:]}
    assert others <= set(queued_jobs(redis_client))
    assert len(queued_jobs(redis_client)) == len(heads)


def test_a_backlog_longer_than_the_sweep_looks_keeps_its_heads_until_it_is_shorter(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queue longer than the sweep looks through: a head whose job is not among the entries
    it looks at is left alone (it may wait further back), and found out once the backlog
    shrinks; a head whose job waits is never started twice."""
    monkeypatch.setattr(line_sweep, "QUEUE_LOOK", 5)
    heads = waiting_heads(redis_client)
    queue = Queue(SEND_QUEUE, connection=redis_client)
    lost = heads[0]
    queue.remove(send_job_id(lost.id))  # popped by a worker that never started it
    ahead = [f"other-{n}" for n in range(8)]
    redis_client.lpush(queue.key, *ahead)  # the backlog in front of the heads' jobs

    sweep(redis_client)
    assert not [j for j in queued_jobs(redis_client) if lost.id in j]

    for other in ahead:  # the workers get through the backlog
        redis_client.lrem(queue.key, 0, other)
    sweep(redis_client)

    restarted = [j for j in queued_jobs(redis_client) if lost.id in j]
    assert len(restarted) == 1 and restarted[0] != send_job_id(lost.id), queued_jobs(redis_client)
    assert {send_job_id(h.id) for h in heads[1:]} <= set(queued_jobs(redis_client))
    assert len(queued_jobs(redis_client)) == len(heads)


def test_a_head_just_started_by_a_worker_is_left_to_it(redis_client: redis.Redis) -> None:
    heads = waiting_heads(redis_client)
    job = Job.fetch(send_job_id(heads[0].id), connection=redis_client)
    Queue(SEND_QUEUE, connection=redis_client).remove(job.id)
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    redis_client.hset(job.key, mapping={"status": "started", "started_at": now})

    sweep(redis_client)

    assert not [j for j in queued_jobs(redis_client) if heads[0].id in j]


def test_a_restarted_head_is_not_restarted_again_while_its_new_job_waits(
    redis_client: redis.Redis,
) -> None:
    heads = waiting_heads(redis_client)
    Job.fetch(send_job_id(heads[0].id), connection=redis_client).delete()
    sweep(redis_client)
    after_first = queued_jobs(redis_client)

    sweep(redis_client)

    assert queued_jobs(redis_client) == after_first
    assert text(redis_client.get(f"msg:{heads[0].id}:runs")) == "1"


def test_a_sweep_reads_its_lines_a_page_at_a_time(
    redis_client: redis.Redis, redis_proxy: CountingProxy
) -> None:
    """300 lines whose heads wait: the heads in one round trip, their records in one, their
    jobs' states in one (it was two reads per line, 600 round trips, and a new job each)."""
    store = MessageStore(redis_client)
    intake = Intake(redis_client, store)
    for n in range(300):
        record = intake.submit(
            MessageRecord.new(to=f"sip:many{n}@contoso.com", text="x", validity_s=900)
        )
        store.update(record.id, lambda r: replace(r, history={"queued": LONG_AGO}))
    sweep(redis_client)  # a process's first sweep also seeds the set of lines (a key scan)
    before = queued_jobs(redis_client)
    through = redis.Redis.from_url(redis_proxy.url())
    through.ping()
    redis_proxy.reset()

    sweep(through)

    counted = redis_proxy.reset()
    assert queued_jobs(redis_client) == before
    # the idle conversations' read, the set of lines' SSCAN calls (one to three, as Redis
    # pages the set), and three pipelined reads for the page of 300 lines. redis-py writes a
    # pipeline of 300 commands in chunks, and on a busy machine the proxy may see Redis answer
    # one chunk before the next arrives and count it apart (15 seen): reads per line would be
    # 600 round trips.
    assert counted.round_trips < 40, counted.round_trips
    assert counted.names["MGET"] == 1 and counted.names["GET"] == 0, counted.names

"""Restarting people's lines that nothing will move on: the poller's sweep, for its account.

A line moves when its head's send job runs, or when the head ends (the final transition starts
the next). It stalls when that job is lost: its enqueue failed after the record was written, a
worker died holding it before it claimed the message, a worker lost Redis between taking it
off the queue and starting it, or a worker died mid-POST. The sweep
starts such a head again (``Outbound.kick``), and only such a head: one whose job still waits in
the queue, or was started a moment ago, is left to that job, however long the backlog (each
restart of a waiting head is one more job for the workers to run and step aside from).

The sweep reads its lines a page at a time: every head in one round trip, their records in
another, and what it needs to judge the suspect ones (the latest job's state, the send lock) in
a third.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

import redis
from rq import Queue
from rq.intermediate_queue import IntermediateQueue

from bridge.config.redis_text import text
from bridge.outbound.holders import ALIVE_PREFIX, HELD_BY_THE_LIVING, SEPARATOR
from bridge.outbound.intake import SEND_QUEUE
from bridge.outbound.message_index import line_account
from bridge.outbound.messages import (
    LINES_KEY,
    MessageRecord,
    fifo_key,
    parse_time,
    recipient_key,
    record_key,
)
from bridge.outbound.outcomes import Outbound

log = logging.getLogger(__name__)

PAGE = 500

# Drop a recipient from the set of lines if its line is (still) empty: atomic against an intake
# that refills it between the sweep's read and this.
_FORGET_EMPTY = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.call('SREM', KEYS[2], ARGV[1])
end
return 0
"""

# The state and start of a message's latest job: its first send job is ``send-<id>``, each
# later one (send or outcome check) ``<kind>-<id>-<run>``, ``run`` counted in ``msg:<id>:runs``.
# KEYS: the send queue's intermediate list, the send queue. ARGV: the message id, how many of
# the queue's first entries to look through. {status, started_at, taken}; status and
# started_at false when there is no such job. ``taken`` is 1 when a worker took the job off the
# queue and never started it: it sits in the intermediate list (RQ's reliable dequeue, a
# worker of one queue), or it says ``queued`` and the queue does not hold it (a worker of
# several queues pops with BLPOP, and Redis went away before it wrote the job's start). A queue
# longer than ARGV[2] whose first entries do not hold it counts as holding it: the sweep looks
# again once the backlog is shorter, and a long backlog costs no more than ARGV[2] a look.
_LATEST_JOB = """
local id = ARGV[1]
local runs = redis.call('GET', 'msg:' .. id .. ':runs')
local ids
if runs then
  ids = {'send-' .. id .. '-' .. runs, 'check-' .. id .. '-' .. runs}
else
  ids = {'send-' .. id}
end
for _, job in ipairs(ids) do
  local found = redis.call('HMGET', 'rq:job:' .. job, 'status', 'started_at')
  if found[1] then
    local taken = redis.call('LPOS', KEYS[1], job) and 1 or 0
    if taken == 0 and found[1] == 'queued' then
      local bound = tonumber(ARGV[2])
      if not redis.call('LPOS', KEYS[2], job, 'MAXLEN', bound)
          and redis.call('LLEN', KEYS[2]) <= bound then
        taken = 1
      end
    end
    return {found[1], found[2], taken}
  end
end
return {false, false, 0}
"""

# Where a worker puts a job it takes off the send queue until it starts it (RQ's reliable
# dequeue); a job left there belongs to a worker that died in between.
_QUEUE = Queue.redis_queue_namespace_prefix + SEND_QUEUE
_TAKEN = IntermediateQueue.get_intermediate_queue_key(_QUEUE)

# How many of the send queue's first entries the sweep looks through for a suspect's job.
QUEUE_LOOK = 1000

# Job states in which RQ will still run the job (or is running it).
_WAITING = frozenset({"queued", "scheduled", "deferred"})


def restart_stalled_lines(
    client: redis.Redis, outbound: Outbound, account_id: str, stale_before: float
) -> int:
    """Start again the head of every line of ``account_id`` that nothing will move on, where
    "stalled" means untouched since ``stale_before`` (epoch seconds). Returns how many."""
    restarted = 0
    for page in _pages(_own_lines(client, account_id)):
        restarted += _sweep_page(client, outbound, page, stale_before)
    return restarted


def _own_lines(client: redis.Redis, account_id: str) -> Iterator[str]:
    # The lines named like this account's (its prefix; every line for the default account,
    # whose lines have none), then only those that are its own.
    mine = recipient_key("*", None, account_id)
    for raw in client.sscan_iter(LINES_KEY, match=mine, count=PAGE):
        recipient = text(raw)
        if line_account(recipient) == account_id:
            yield recipient


def _pages(items: Iterable[str]) -> Iterator[list[str]]:
    page: list[str] = []
    for item in items:
        page.append(item)
        if len(page) >= PAGE:
            yield page
            page = []
    if page:
        yield page


def _sweep_page(
    client: redis.Redis, outbound: Outbound, recipients: list[str], stale_before: float
) -> int:
    with client.pipeline(transaction=False) as pipe:
        for recipient in recipients:
            pipe.lindex(fifo_key(recipient), 0)
        heads = [None if raw is None else text(raw) for raw in pipe.execute()]
    ids = sorted({head for head in heads if head is not None})
    raws = dict(zip(ids, client.mget([record_key(i) for i in ids]), strict=True)) if ids else {}
    to_restart: list[str] = []
    suspects: list[tuple[str, MessageRecord]] = []
    for recipient, head in zip(recipients, heads, strict=True):
        if head is None:
            # Emptied by a TTL, or by a pop that raced this read: drop it unless refilled.
            client.eval(_FORGET_EMPTY, 2, fifo_key(recipient), LINES_KEY, recipient)
            continue
        raw = raws.get(head)
        if raw is None:  # a vanished record: kick() drops it and starts the next
            to_restart.append(recipient)
            continue
        record = MessageRecord.from_json(raw)
        if record.status.is_terminal:
            to_restart.append(recipient)
        elif _untouched(record, stale_before):
            suspects.append((recipient, record))
    if suspects:
        to_restart += _stalled(client, suspects, stale_before)
    for recipient in to_restart:
        outbound.kick(recipient)
    return len(to_restart)


def _untouched(record: MessageRecord, stale_before: float) -> bool:
    """Waiting to be sent, or left mid-POST, with nothing written since ``stale_before``."""
    if record.step == "queued":
        touched = max((_epoch(t) for t in record.history.values()), default=0.0)
        return touched < stale_before
    return record.step.startswith("posting") and (record.attempt_at or 0) < stale_before


def _stalled(
    client: redis.Redis, suspects: list[tuple[str, MessageRecord]], stale_before: float
) -> list[str]:
    """The suspects nothing will move on, in one round trip: a queued head whose latest job
    will not run it (gone, ended, or started before ``stale_before`` and still unclaimed: its
    worker died), and a head left mid-POST whose send lock has expired or whose worker process
    is gone (``holders``): a new run settles it, adopting what the event channel saw."""
    with client.pipeline(transaction=False) as pipe:
        for _, record in suspects:
            if record.step == "queued":
                pipe.eval(_LATEST_JOB, 2, _TAKEN, _QUEUE, record.id, QUEUE_LOOK)
            else:
                # held by a live run; a lock whose worker process is gone counts as expired
                pipe.eval(HELD_BY_THE_LIVING, 1, f"lock:send:{record.id}", ALIVE_PREFIX, SEPARATOR)
        answers = pipe.execute()
    stalled = []
    for (recipient, record), answer in zip(suspects, answers, strict=True):
        if record.step == "queued":
            if not _will_run(answer, stale_before):
                stalled.append(recipient)
        elif not answer:
            stalled.append(recipient)
    return stalled


def _will_run(answer: Any, stale_before: float) -> bool:
    raw_status, raw_started, taken = answer
    status, started_at = (None if v is None else text(v) for v in (raw_status, raw_started))
    if status in _WAITING:
        # Still "queued" but taken off the queue two sweeps ago or more: the worker that took
        # it died, or lost Redis, before starting it (RQ's own cleanup of its intermediate list
        # takes minutes; nothing of RQ's finds a job popped with BLPOP).
        return not taken
    return status == "started" and started_at is not None and _epoch(started_at) >= stale_before
    return status == "started" and started_at is not None and _epoch(started_at) >= stale_before


def _epoch(value: str) -> float:
    try:
        return parse_time(value)
    except ValueError:
        return 0.0

"""The delivery log in Redis: one record per (event, endpoint), its attempts, indexes, dead letters.

State changes run in WATCH/MULTI transactions so records, indexes and jobs never disagree.

Keys (all under ``webhooks:``)::

    event:{event_id}              STRING  exact body bytes that are signed and POSTed
    delivery:{id}                 HASH    the DeliveryRecord fields
    delivery:{id}:attempts        LIST    one JSON object per attempt, oldest first
    index:all                     ZSET    id -> created ms (newest first listing)
    index:status:{status}         ZSET    id -> created ms
    index:endpoint:{endpoint_id}  ZSET    id -> created ms
    index:type:{event_type}       ZSET    id -> created ms
    dead                          ZSET    id -> dead-lettered ms

Records, attempts and bodies expire after the retention; index entries are pruned on write.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, TypeVar, cast

import redis
from redis.client import Pipeline
from redis.exceptions import WatchError

from bridge.config.redis_conn import SentScript, send_script
from bridge.config.redis_text import text
from bridge.webhooks.errors import DeliveryInFlight, DeliveryNotFound

PREFIX = "webhooks:"
LOST_REASON = "worker_lost"
LOST_ERROR = "worker_lost: the run of this try ended without an outcome (its worker stopped)"
T = TypeVar("T")


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # queued or being attempted
    FAILED = "failed"  # the last attempt failed; a retry is scheduled
    SUCCEEDED = "succeeded"
    DEAD = "dead"  # no further attempts; see ``reason``


class Keys:
    event = staticmethod(lambda event_id: f"{PREFIX}event:{event_id}")
    delivery = staticmethod(lambda delivery_id: f"{PREFIX}delivery:{delivery_id}")
    attempts = staticmethod(lambda delivery_id: f"{PREFIX}delivery:{delivery_id}:attempts")
    by_status = staticmethod(lambda status: f"{PREFIX}index:status:{status}")
    by_endpoint = staticmethod(lambda endpoint_id: f"{PREFIX}index:endpoint:{endpoint_id}")
    by_type = staticmethod(lambda event_type: f"{PREFIX}index:type:{event_type}")
    # Set while the endpoint is disabled (``endpoint_status.py``).
    endpoint_disabled = staticmethod(lambda endpoint_id: f"{PREFIX}endpoint:{endpoint_id}:disabled")
    all = f"{PREFIX}index:all"
    dead = f"{PREFIX}dead"


def delivery_id_for(event_id: str, endpoint_id: str) -> str:
    """Deterministic, so staging the same event twice names the same delivery."""
    digest = hashlib.sha256(f"{event_id}\n{endpoint_id}".encode()).hexdigest()
    return "dlv_" + digest[:24]


@dataclass(frozen=True)
class DeliveryRecord:
    """One delivery. ``try_no`` is the try the next job performs; ``started`` the last claimed."""

    id: str
    event_id: str
    event_type: str
    endpoint_id: str
    status: DeliveryStatus
    created_ms: int
    updated_ms: int
    try_no: int = 1
    started: int = 0
    round_failures: int = 0
    attempt_count: int = 0
    next_attempt_ms: int | None = None
    lease_until_ms: int = 0
    reason: str = ""
    # The RQ job that carries the queued try, written with the job (``DeliveryJobs``), never
    # by ``to_hash``; "" in records staged before it was kept: their job is job_id_for(...).
    job: str = ""

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes]) -> DeliveryRecord:
        f = {k.decode(): v.decode() for k, v in raw.items()}
        return cls(
            id=f["id"],
            event_id=f["event_id"],
            event_type=f["event_type"],
            endpoint_id=f["endpoint_id"],
            status=DeliveryStatus(f["status"]),
            created_ms=int(f["created_ms"]),
            updated_ms=int(f["updated_ms"]),
            try_no=int(f.get("try_no", 1)),
            started=int(f.get("started", 0)),
            round_failures=int(f.get("round_failures", 0)),
            attempt_count=int(f.get("attempt_count", 0)),
            next_attempt_ms=int(f["next_attempt_ms"]) if f.get("next_attempt_ms") else None,
            lease_until_ms=int(f.get("lease_until_ms", 0)),
            reason=f.get("reason", ""),
            job=f.get("job", ""),
        )

    def to_hash(self) -> dict[str, str | int]:
        return {
            "id": self.id,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "endpoint_id": self.endpoint_id,
            "status": self.status.value,
            "created_ms": self.created_ms,
            "updated_ms": self.updated_ms,
            "try_no": self.try_no,
            "started": self.started,
            "round_failures": self.round_failures,
            "attempt_count": self.attempt_count,
            "next_attempt_ms": "" if self.next_attempt_ms is None else self.next_attempt_ms,
            "lease_until_ms": self.lease_until_ms,
            "reason": self.reason,
        }

    def lost(self, now_ms: int) -> bool:
        """Claimed, never concluded, and its lease has run out: the run that took the try ended
        without an outcome (its worker was killed, or lost Redis for longer than the lease)."""
        return (
            self.status is DeliveryStatus.PENDING
            and self.started >= self.try_no
            and 0 < self.lease_until_ms <= now_ms
        )

    def queued(self) -> bool:
        """Pending with its try not yet taken: a job is to take it."""
        return self.status is DeliveryStatus.PENDING and self.started < self.try_no

    def in_flight(self, now_ms: int) -> bool:
        """Queued (a try not yet claimed) or being attempted under an unexpired lease."""
        if self.status is not DeliveryStatus.PENDING:
            return False
        return self.started < self.try_no or self.lease_until_ms > now_ms


@dataclass(frozen=True)
class Attempt:
    """One HTTP attempt as an operator sees it; ``excerpt`` is already capped by the sender."""

    at_ms: int
    try_no: int
    status_code: int | None
    error: str | None
    latency_ms: int
    excerpt: str = ""

    def to_json(self) -> str:
        return json.dumps(
            {
                "at_ms": self.at_ms,
                "try": self.try_no,
                "status_code": self.status_code,
                "error": self.error,
                "latency_ms": self.latency_ms,
                "response_excerpt": self.excerpt,
            }
        )


@dataclass(frozen=True)
class Claimed:
    """A try taken for this run, with what its POST needs, read under the claim: the event's
    body (None once past retention) and whether its endpoint is disabled."""

    record: DeliveryRecord
    body: bytes | None = None
    disabled: bool = False


@dataclass(frozen=True)
class NotDue:
    try_no: int
    at_ms: int


@dataclass(frozen=True)
class Skipped:
    reason: str


Claim = Claimed | NotDue | Skipped


def _claim_of(answer: list[Any]) -> Claim:
    verdict = answer[0].decode()
    if verdict == "claimed":
        flat, body, disabled = answer[1:4]
        record = DeliveryRecord.from_hash(dict(zip(flat[::2], flat[1::2], strict=True)))
        return Claimed(record, body, bool(disabled))
    if verdict == "not_due":
        return NotDue(int(answer[1]), int(answer[2]))
    if verdict == "already":
        return Skipped(f"already {answer[1].decode()}")
    return Skipped("missing" if verdict == "missing" else "try already taken")


# Claim one or several deliveries: KEYS pending index, failed index, then the deliveries; ARGV
# now, lease end, latest due, retention, then how the keys of an event's body and of an
# endpoint's disabled flag are spelled around its id (read for each try claimed: its POST needs
# them, and they come in the claim's round trip). One answer per delivery, in order. The checks of a
# claim, in order: the record exists, is pending or failed, its try is not taken, and it is due
# (up to ``early_ms`` ahead).
_CLAIM = """
local answers = {}
for k = 3, #KEYS do
  local f = redis.call('HGETALL', KEYS[k])
  local r = {}
  for i = 1, #f, 2 do r[f[i]] = f[i + 1] end
  local try_no = r.try_no or '1'
  local due = r.next_attempt_ms
  if #f == 0 then
    answers[#answers + 1] = {'missing'}
  elseif r.status ~= 'pending' and r.status ~= 'failed' then
    answers[#answers + 1] = {'already', r.status}
  elseif tonumber(r.started or '0') >= tonumber(try_no) then
    answers[#answers + 1] = {'taken'}
  elseif due and due ~= '' and tonumber(due) > tonumber(ARGV[3]) then
    answers[#answers + 1] = {'not_due', try_no, due}
  else
    redis.call('HSET', KEYS[k], 'status', 'pending', 'started', try_no,
      'lease_until_ms', ARGV[2], 'updated_ms', ARGV[1])
    redis.call('EXPIRE', KEYS[k], ARGV[4])
    if r.status == 'failed' then
      redis.call('ZREM', KEYS[2], r.id)
      redis.call('ZADD', KEYS[1], r.created_ms, r.id)
    end
    answers[#answers + 1] = {'claimed', redis.call('HGETALL', KEYS[k]),
      redis.call('GET', ARGV[5] .. (r.event_id or '')),
      redis.call('EXISTS', ARGV[6] .. (r.endpoint_id or '') .. ARGV[7])}
  end
end
return answers
"""

# Conclude a try whose outcome needs no job: KEYS delivery, attempts, event body, pending index,
# the final status's index, dead letters; ARGV started, retention, attempt JSON (or ""), final
# status, created ms, updated ms, then the fields that changed as name, value pairs. 0 when the try
# is no longer this run's (another run claimed it, or an operator requeued it); 1 when it is
# concluded, by this call or by the same call run before (its answer lost, the call repeated:
# the record already holds this outcome with this update time, and nothing is counted twice).
_CONCLUDE = """
local status, started, updated = unpack(redis.call('HMGET', KEYS[1], 'status', 'started',
  'updated_ms'))
if started ~= ARGV[1] then return 0 end
if status ~= 'pending' then
  if status == ARGV[4] and updated == ARGV[6] then return 1 end
  return 0
end
local id = redis.call('HGET', KEYS[1], 'id')
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
if ARGV[3] ~= '' then
  redis.call('HINCRBY', KEYS[1], 'attempt_count', 1)
  redis.call('RPUSH', KEYS[2], ARGV[3])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[2])
if ARGV[4] ~= 'pending' then
  redis.call('ZREM', KEYS[4], id)
  redis.call('ZADD', KEYS[5], ARGV[5], id)
end
if ARGV[4] == 'dead' then redis.call('ZADD', KEYS[6], ARGV[6], id) end
return 1
"""


class DeliveryLog:
    """Reads and writes delivery records; every state change is one Redis transaction."""

    def __init__(self, connection: redis.Redis, retention_s: int) -> None:
        self._r = connection
        self.retention_s = retention_s
        self._claim_script = connection.register_script(_CLAIM)
        self._conclude_script = connection.register_script(_CONCLUDE)

    # -- staging (inside the producer's MULTI) -------------------------------------------------

    def stage(self, pipe: Pipeline, record: DeliveryRecord, body: bytes) -> None:
        """Queue the writes for a new delivery (and its event body) on ``pipe``; no reads."""
        ttl = self.retention_s
        pipe.set(Keys.event(record.event_id), body, ex=ttl)
        pipe.delete(Keys.delivery(record.id), Keys.attempts(record.id))
        pipe.hset(Keys.delivery(record.id), mapping=record.to_hash())  # type: ignore[arg-type]
        pipe.expire(Keys.delivery(record.id), ttl)
        score = {record.id: record.created_ms}
        cutoff = record.created_ms - ttl * 1000
        for index in (
            Keys.all,
            Keys.by_status(record.status),
            Keys.by_endpoint(record.endpoint_id),
            Keys.by_type(record.event_type),
        ):
            pipe.zadd(index, score)
            pipe.zremrangebyscore(index, "-inf", cutoff)
        for status in DeliveryStatus:
            if status is not record.status:
                pipe.zremrangebyscore(Keys.by_status(status), "-inf", cutoff)
        pipe.zremrangebyscore(Keys.dead, "-inf", cutoff)

    # -- reads ---------------------------------------------------------------------------------

    def get(self, delivery_id: str) -> DeliveryRecord | None:
        raw = self._r.hgetall(Keys.delivery(delivery_id))
        return DeliveryRecord.from_hash(raw) if raw else None  # type: ignore[arg-type]

    def attempts(self, delivery_id: str) -> list[dict[str, Any]]:
        items = cast(list[bytes], self._r.lrange(Keys.attempts(delivery_id), 0, -1))
        return [json.loads(item) for item in items]

    def event_body(self, event_id: str) -> bytes | None:
        return self._r.get(Keys.event(event_id))  # type: ignore[return-value]

    def page(
        self,
        *,
        status: str | None = None,
        endpoint_id: str | None = None,
        event_type: str | None = None,
        limit: int = 50,
        cursor: tuple[int, str] | None = None,
    ) -> tuple[list[DeliveryRecord], tuple[int, str] | None]:
        """Newest first. Walks the most selective index and filters the rest; ``cursor`` is the
        (created ms, id) of the last item of the previous page."""
        if status is not None:
            index = Keys.by_status(status)
        elif endpoint_id is not None:
            index = Keys.by_endpoint(endpoint_id)
        elif event_type is not None:
            index = Keys.by_type(event_type)
        else:
            index = Keys.all
        high: str | int = "+inf" if cursor is None else cursor[0]
        found: list[DeliveryRecord] = []
        offset, batch = 0, max(limit * 2, 20)
        while len(found) < limit:
            rows = cast(
                list[tuple[bytes, float]],
                self._r.zrevrangebyscore(
                    index, high, "-inf", start=offset, num=batch, withscores=True
                ),
            )
            if not rows:
                break
            offset += len(rows)
            ids = []
            for member, score in rows:
                delivery_id = member.decode()
                if cursor is not None and int(score) == cursor[0] and delivery_id >= cursor[1]:
                    continue  # same millisecond: members come in descending id order
                ids.append(delivery_id)
            for record in self._get_many(ids):
                if status is not None and record.status != status:
                    continue
                if endpoint_id is not None and record.endpoint_id != endpoint_id:
                    continue
                if event_type is not None and record.event_type != event_type:
                    continue
                found.append(record)
                if len(found) == limit:
                    break
        more = len(found) == limit
        last = found[-1] if more and found else None
        return found, (last.created_ms, last.id) if last else None

    def replayable_since(self, since_ms: int, endpoint_id: str | None = None) -> list[str]:
        """Ids of dead and failed deliveries created at or after ``since_ms``, oldest first."""
        ids: list[tuple[float, str]] = []
        for status in (DeliveryStatus.DEAD, DeliveryStatus.FAILED):
            rows = cast(
                list[tuple[bytes, float]],
                self._r.zrangebyscore(Keys.by_status(status), since_ms, "+inf", withscores=True),
            )
            ids.extend((score, member.decode()) for member, score in rows)
        records = self._get_many([i for _, i in sorted(ids)])
        return [r.id for r in records if endpoint_id is None or r.endpoint_id == endpoint_id]

    def _get_many(self, ids: list[str]) -> list[DeliveryRecord]:
        with self._r.pipeline(transaction=False) as pipe:
            for delivery_id in ids:
                pipe.hgetall(Keys.delivery(delivery_id))
            raws = pipe.execute()
        return [DeliveryRecord.from_hash(raw) for raw in raws if raw]

    # -- state changes -------------------------------------------------------------------------

    def claim(self, delivery_id: str, now_ms: int, lease_ms: int, early_ms: int = 1000) -> Claim:
        """Take the scheduled try for this run, at most once per try (RQ may run a job twice).

        One script call: read, check and take, with the record's status index moved along."""
        return self.claim_many([delivery_id], now_ms, lease_ms, early_ms)[0]

    def claim_many(
        self, delivery_ids: list[str], now_ms: int, lease_ms: int, early_ms: int = 1000
    ) -> list[Claim]:
        """``claim`` for each of ``delivery_ids`` in one script call; the claims in order."""
        answers = cast(
            list[Any],
            self._claim_script(
                keys=[
                    Keys.by_status(DeliveryStatus.PENDING),
                    Keys.by_status(DeliveryStatus.FAILED),
                    *(Keys.delivery(i) for i in delivery_ids),
                ],
                args=[
                    now_ms,
                    now_ms + lease_ms,
                    now_ms + early_ms,
                    self.retention_s,
                    Keys.event(""),
                    *Keys.endpoint_disabled("\0").split("\0"),
                ],
            ),
        )
        return [_claim_of(answer) for answer in answers]

    def hand_back(
        self,
        claimed: list[DeliveryRecord],
        now_ms: int,
        enqueue: Callable[[Pipeline, str, int], None],
    ) -> list[str]:
        """Give claimed tries back unattempted, each queued again (``enqueue`` writes its job in
        the same transaction); the ids given back. A try another run took meanwhile, or that an
        operator requeued, is left alone."""
        if not claimed:
            return []
        keys = [Keys.delivery(record.id) for record in claimed]
        with self._r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(*keys)
                    ours = []
                    for record in claimed:
                        current = self._read(pipe, record.id)
                        if (
                            current is not None
                            and current.status is DeliveryStatus.PENDING
                            and current.started == record.started
                            and current.try_no == record.try_no
                        ):
                            ours.append(current)
                    pipe.multi()
                    for current in ours:
                        pipe.hset(
                            Keys.delivery(current.id),
                            mapping={
                                "started": current.started - 1,
                                "lease_until_ms": 0,
                                "updated_ms": now_ms,
                            },
                        )
                        enqueue(pipe, current.id, current.try_no)
                    pipe.execute()
                    return [current.id for current in ours]
                except WatchError:
                    continue

    def conclude(
        self,
        claimed: DeliveryRecord,
        updated: DeliveryRecord,
        attempt: Attempt | None,
        after: Callable[[Pipeline], None] | None = None,
    ) -> bool:
        """Record the outcome of a claimed try; False if the try is no longer ours.

        Without ``after`` (a try that needs no job and no endpoint change) one script call;
        otherwise a WATCH/MULTI transaction, so the jobs ``after`` writes commit with it."""
        if after is None:
            return self._conclude_in_one(claimed, updated, attempt)

        def attempt_(pipe: Pipeline) -> bool:
            current = self._read(pipe, claimed.id)
            if (
                current is None
                or current.status is not DeliveryStatus.PENDING
                or current.started != claimed.started
            ):
                return False
            pipe.multi()
            final = replace(
                updated,
                attempt_count=current.attempt_count + (1 if attempt else 0),
                lease_until_ms=0,
            )
            if attempt is not None:
                pipe.rpush(Keys.attempts(claimed.id), attempt.to_json())
                pipe.expire(Keys.attempts(claimed.id), self.retention_s)
            self._write(pipe, current, final)
            if after is not None:
                after(pipe)
            pipe.execute()
            return True

        return self._transact(claimed.id, attempt_)

    def requeue(
        self, delivery_id: str, now_ms: int, enqueue: Callable[[Pipeline, int], None]
    ) -> DeliveryRecord:
        """Make a dead, failed or succeeded delivery try again now with a fresh schedule."""

        def attempt(pipe: Pipeline) -> DeliveryRecord:
            record = self._read(pipe, delivery_id)
            if record is None:
                raise DeliveryNotFound(delivery_id)
            if record.in_flight(now_ms):
                raise DeliveryInFlight(delivery_id)
            again = replace(
                record,
                status=DeliveryStatus.PENDING,
                try_no=record.started + 1,
                round_failures=0,
                next_attempt_ms=now_ms,
                lease_until_ms=0,
                reason="",
                updated_ms=now_ms,
            )
            pipe.multi()
            self._write(pipe, record, again)
            enqueue(pipe, again.try_no)
            pipe.execute()
            return again

        return self._transact(delivery_id, attempt)

    def send_conclusion(
        self, claimed: DeliveryRecord, updated: DeliveryRecord, attempt: Attempt | None
    ) -> SentScript:
        """``conclude`` without ``after``, written to Redis without waiting for its answer: the
        caller reads it (``SentScript.answer``, 1 or 0 as ``conclude``'s True or False) after
        its next piece of work. If that read fails, ``conclude`` with the same arguments is
        safe to run: a conclusion already applied answers 1 again and counts nothing twice."""
        return send_script(
            self._r, self._conclude_script, *self._conclusion(claimed, updated, attempt)
        )

    def _conclude_in_one(
        self, claimed: DeliveryRecord, updated: DeliveryRecord, attempt: Attempt | None
    ) -> bool:
        keys, args = self._conclusion(claimed, updated, attempt)
        return bool(self._conclude_script(keys=keys, args=args))

    def _conclusion(
        self, claimed: DeliveryRecord, updated: DeliveryRecord, attempt: Attempt | None
    ) -> tuple[list[str], list[str | int]]:
        """The conclusion script's keys and arguments."""
        # Only what changed since the claim: the script has checked that the record is still
        # the claimed one, and nothing else writes a claimed try's other fields.
        before = claimed.to_hash()
        fields = {name: value for name, value in updated.to_hash().items() if before[name] != value}
        fields.pop("attempt_count", None)  # counted up by the script
        fields["lease_until_ms"] = 0
        final = updated.status
        keys = [
            Keys.delivery(claimed.id),
            Keys.attempts(claimed.id),
            Keys.event(claimed.event_id),
            Keys.by_status(DeliveryStatus.PENDING),
            Keys.by_status(final),
            Keys.dead,
        ]
        args: list[str | int] = [
            claimed.started,
            self.retention_s,
            attempt.to_json() if attempt is not None else "",
            final.value,
            claimed.created_ms,
            updated.updated_ms,
        ]
        for name, value in fields.items():
            args += [name, value]
        return keys, args

    def lost_claims(self, now_ms: int, limit: int) -> list[DeliveryRecord]:
        """Lost tries (``DeliveryRecord.lost``) among the ``limit`` oldest pending deliveries."""
        oldest = self._r.zrange(Keys.by_status(DeliveryStatus.PENDING), 0, limit - 1)
        ids = [text(member) for member in cast(list[bytes], oldest)]
        return [record for record in self._get_many(ids) if record.lost(now_ms)]

    def overdue(self, before_ms: int, limit: int) -> list[DeliveryRecord]:
        """Queued tries (``DeliveryRecord.queued``) due before ``before_ms``, among the ``limit``
        oldest pending deliveries."""
        oldest = self._r.zrange(Keys.by_status(DeliveryStatus.PENDING), 0, limit - 1)
        ids = [text(member) for member in cast(list[bytes], oldest)]
        return [
            record
            for record in self._get_many(ids)
            if record.queued() and (record.next_attempt_ms or 0) < before_ms
        ]

    def queue_again(
        self, stranded: DeliveryRecord, now_ms: int, enqueue: Callable[[Pipeline, int], None]
    ) -> bool:
        """Give a queued try whose job ended without taking it a new job (``enqueue``), if it is
        still that try, queued, with that job; False if anything moved meanwhile."""

        def attempt(pipe: Pipeline) -> bool:
            current = self._read(pipe, stranded.id)
            if (
                current is None
                or not current.queued()
                or (current.try_no, current.started, current.job)
                != (stranded.try_no, stranded.started, stranded.job)
            ):
                return False
            pipe.multi()
            pipe.hset(Keys.delivery(current.id), "updated_ms", now_ms)
            enqueue(pipe, current.try_no)
            pipe.execute()
            return True

        return self._transact(stranded.id, attempt)

    def recover(
        self,
        delivery_id: str,
        now_ms: int,
        max_failures: int,
        enqueue: Callable[[Pipeline, int], None],
    ) -> DeliveryRecord | None:
        """Count a lost try as a failed one, with an attempt that says so, and try again now
        (``enqueue``), or dead-letter the delivery past ``max_failures`` failures in a row. None
        if the try is no longer lost (it concluded, or was recovered, meanwhile)."""

        def attempt(pipe: Pipeline) -> DeliveryRecord | None:
            record = self._read(pipe, delivery_id)
            if record is None or not record.lost(now_ms):
                return None
            failures = record.round_failures + 1
            dead = failures > max_failures
            lost = Attempt(now_ms, record.started, None, LOST_ERROR, 0)
            again = replace(
                record,
                status=DeliveryStatus.DEAD if dead else DeliveryStatus.FAILED,
                try_no=record.started + 1,
                round_failures=failures,
                attempt_count=record.attempt_count + 1,
                next_attempt_ms=None if dead else now_ms,
                lease_until_ms=0,
                reason=LOST_REASON,
                updated_ms=now_ms,
            )
            pipe.multi()
            pipe.rpush(Keys.attempts(delivery_id), lost.to_json())
            pipe.expire(Keys.attempts(delivery_id), self.retention_s)
            self._write(pipe, record, again)
            if not dead:
                enqueue(pipe, again.try_no)
            pipe.execute()
            return again

        return self._transact(delivery_id, attempt)

    # -- helpers -------------------------------------------------------------------------------

    def _transact(self, delivery_id: str, body: Callable[[Pipeline], T]) -> T:
        with self._r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(Keys.delivery(delivery_id))
                    return body(pipe)
                except WatchError:
                    continue

    @staticmethod
    def _read(pipe: Pipeline, delivery_id: str) -> DeliveryRecord | None:
        raw = pipe.hgetall(Keys.delivery(delivery_id))
        return DeliveryRecord.from_hash(raw) if raw else None  # type: ignore[arg-type]

    def _write(self, pipe: Pipeline, before: DeliveryRecord, after: DeliveryRecord) -> None:
        key = Keys.delivery(after.id)
        pipe.hset(key, mapping=after.to_hash())  # type: ignore[arg-type]
        pipe.expire(key, self.retention_s)
        pipe.expire(Keys.event(after.event_id), self.retention_s)
        if before.status is not after.status:
            pipe.zrem(Keys.by_status(before.status), after.id)
            pipe.zadd(Keys.by_status(after.status), {after.id: after.created_ms})
        if after.status is DeliveryStatus.DEAD:
            pipe.zadd(Keys.dead, {after.id: after.updated_ms})
        elif before.status is DeliveryStatus.DEAD:
            pipe.zrem(Keys.dead, after.id)

"""The RQ worker class of ``ucwa-bridge worker``: RQ's SimpleWorker, told how to live with outages.

It reconnects every few seconds, logs an outage once instead of every try, and stops on request.
A worker process runs several of them, its job runners (``BRIDGE_WORKER_RUNNERS``), the first in
the main thread and each other one in a thread of its own: the signals and SIGALRM are the main
thread's, so a runner in a thread waits for jobs a second at a time, sees a stop between two
waits, and has its job timeouts raised by ``RunnerDeathPenalty``.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import threading
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from types import FrameType
from typing import Any, cast

import redis
from redis.commands.core import Script
from rq import Queue, SimpleWorker
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.exceptions import NoSuchJobError, StopRequested
from rq.executions import Execution, ExecutionRegistry
from rq.job import Job, _job_stack
from rq.scheduler import RQScheduler
from rq.serializers import PickleSerializer
from rq.timeouts import BaseDeathPenalty, BaseTimeoutException
from rq.utils import as_text, backend_class, current_timestamp, now, utcformat
from rq.worker import WorkerStatus

from bridge.config.redis_faults import Outage, probe_writable, redis_unavailable
from bridge.net.deadline import arm
from bridge.webhooks.jobs import QUEUE_NAME as WEBHOOK_QUEUE

log = logging.getLogger("ucwa_bridge.worker")

# Set when the worker is asked to stop; a job waiting for Redis gives up its wait on it.
stopping = threading.Event()
# A second signal: RQ stops the main runner cold (``SystemExit``); the process abandons the jobs
# of its runners in threads as well (``bridge.cli.run_worker``), and no UCWA request starts.
stopping_cold = threading.Event()

# The least time between two heartbeats that carry nothing else, and between two looks at
# ``rq suspend``'s flag: between two jobs RQ would send each several times in a few ms.
HEARTBEAT_EVERY_S = 1.0

# A scheduler that ran this long before failing starts its backoff from the first step again.
FAILURE_RESET_S = 60.0

# How often a scheduler tries for the locks of queues another scheduler held (each try is one
# SET NX per queue): a lock lapses a minute after its holder died.
REACQUIRE_LOCKS_S = 5.0

# How long the worker's end waits for its scheduler to give its locks back.
SCHEDULER_STOP_WAIT_S = 5.0


# The longest RQ's pubsub thread (kill-horse and shutdown commands) waits between looks at its
# stop flag. RQ asks for 60 s, and redis-py 8.2+ waits for the thread when it is stopped: a thread
# that had already read its unsubscribe answer held every worker's shutdown (and every burst's
# end) for up to a minute.
PUBSUB_WAIT_S = 0.5

# The name of every scheduler this process starts, the owner of the queues' scheduler locks: a
# scheduler started anew in this process (by RQ's maintenance, after one stopped) takes back the
# locks of the one before it at once, instead of finding them taken for their TTL, a minute, with
# no retry or rate-limited send run meanwhile.
SCHEDULER_NAME = uuid.uuid4().hex

# A job that succeeded with result_ttl=0 (every bridge job: the message record and the delivery
# log hold the outcomes) is forgotten in one call: RQ's own path reads the job's status three
# times, its executions twice and its dependents under WATCH first, eleven round trips more per
# job. The worker's ``idle`` and its heartbeat (the time and the worker key's TTL) go in the same
# call, as RQ sends them before its next wait.
#
# A worker of several queues takes a job with BLPOP and then reads it with HGETALL, two round
# trips more. While a queue holds jobs, the same call takes the next one: the first queue (in
# the worker's order) that has a job gives it up, and its hash comes back with it. An id whose
# hash is gone comes back with an empty one, and the caller pops again, as RQ passes such ids
# over. An empty set of queues answers without a job, and the worker blocks in RQ's own BLPOP.
#
# So a job's end and the next one's start are one round trip. KEYS: when ARGV[1] is '1', the
# forgotten job's seven keys first (the worker, its started registry, the execution, the job's
# executions, the job, its dependents and dependencies); then the queues. ARGV[2]: the job key
# prefix; ARGV[3..7]: the execution's composite key and id, the working seconds, the time and
# the worker key's TTL. It answers {0}, writing nothing and taking nothing, when the job has
# dependents (the bridge enqueues none): the worker takes RQ's own path for it, then takes
# again. A call run twice (redis-py runs it again when its answer was lost) counts the job once.
_FORGET_AND_TAKE = Script(
    None,  # type: ignore[arg-type]  # called with the worker's connection every time
    b"""
local first = 1
if ARGV[1] == '1' then
    local worker, wip, execution, executions, job, dependents, dependencies =
        KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
    if redis.call('EXISTS', dependents) == 1 then return {0} end
    if redis.call('DEL', job) == 1 then
        redis.call('HINCRBY', worker, 'successful_job_count', 1)
        redis.call('HINCRBYFLOAT', worker, 'total_working_time', ARGV[5])
    end
    redis.call('HDEL', worker, 'current_job')
    redis.call('HSET', worker, 'state', 'idle', 'last_heartbeat', ARGV[6])
    redis.call('EXPIRE', worker, ARGV[7])
    redis.call('ZREM', wip, ARGV[3])
    redis.call('DEL', execution, executions, dependencies)
    first = 8
end
for i = first, #KEYS do
    local id = redis.call('LPOP', KEYS[i])
    if id then return {1, KEYS[i], id, redis.call('HGETALL', ARGV[2] .. id)} end
end
return {1}
""",
)


class RunnerDeathPenalty(BaseDeathPenalty):
    """A job's timeout for a runner in a thread, where SIGALRM cannot reach it: the job's
    exception is raised in its thread (as RQ's ``TimerDeathPenalty`` does) by the process's
    watchdog thread (``bridge.net.deadline``), instead of a new timer thread for every job."""

    def setup_death_penalty(self) -> None:
        self._expiry: _JobExpiry | None = None
        if self._timeout > 0:
            self._expiry = _JobExpiry(self._timeout, _timeout_class(self._exception, self._timeout))
            arm(self._expiry)

    def cancel_death_penalty(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None


class _JobExpiry:
    """Raises ``exception`` in the thread that made it, once, unless cancelled first."""

    def __init__(self, seconds: float, exception: type[BaseException]) -> None:
        self.expires_at = time.monotonic() + seconds
        self.done = False
        self._thread = threading.get_ident()
        self._exception = exception
        self._lock = threading.Lock()

    def fire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.done = True
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(self._thread), ctypes.py_object(self._exception)
            )

    def cancel(self) -> None:
        with self._lock:
            self.done = True


@functools.lru_cache(maxsize=64)
def _timeout_class(base: type[BaseTimeoutException], timeout: int) -> type[BaseException]:
    """``base`` with RQ's message: an exception raised in another thread is given as a class."""

    def init(self: BaseException, *args: Any) -> None:
        base.__init__(self, f"Task exceeded maximum timeout value ({timeout} seconds)")

    return type(base.__name__, (base,), {"__init__": init, "__module__": base.__module__})


@dataclass
class _HeldForget:
    """A succeeded job's forgetting, held until the worker's next call to Redis carries it."""

    keys: list[str]
    args: list[Any]
    job: Job
    queue: Queue
    started_job_registry: Any
    execution: Execution


# The worker asking for its next job in this thread: ``BridgeQueue.dequeue_any`` (which RQ calls
# as a class method, without it) sends its held forget with the take.
_taking: ContextVar[BridgeWorker | None] = ContextVar("bridge_worker_taking", default=None)


class BridgeQueue(Queue):
    """RQ's queue, whose ``dequeue_any`` takes a waiting job and reads it in one round trip, with
    the forgetting of the worker's last job."""

    @classmethod
    def dequeue_any(
        cls,
        queues: Any,
        timeout: int | None,
        connection: Any,
        job_class: type[Job] | None = None,
        serializer: Any = None,
        death_penalty_class: Any = None,
    ) -> tuple[Job, Queue] | None:
        queues = list(queues)
        worker = _taking.get()
        if len(queues) == 1:
            # RQ moves the job of a single queue into an intermediate list (LMOVE), which its
            # cleanup recovers a lost job from: that path stays RQ's own, after the held forget.
            if worker is not None:
                worker.send_held_forget()
            return super().dequeue_any(
                queues, timeout, connection, job_class, serializer, death_penalty_class
            )
        job_cls: type[Job] = backend_class(cls, "job_class", override=job_class)
        keys = [queue.key for queue in queues]
        prefix = job_cls.redis_job_namespace_prefix
        while True:
            if worker is not None:
                found = worker.forget_and_take(keys, prefix)
            else:
                found = _FORGET_AND_TAKE(keys, ["0", prefix], client=connection)
            if len(found) == 1:  # nothing waiting
                return super().dequeue_any(
                    queues, timeout, connection, job_class, serializer, death_penalty_class
                )
            queue_key, job_id, flat = as_text(found[1]), as_text(found[2]), found[3]
            if not flat:
                continue  # as RQ's own: a job that no longer exists is passed over
            queue = cls.from_queue_key(
                queue_key,
                connection=connection,
                job_class=job_cls,
                serializer=serializer,
                death_penalty_class=death_penalty_class,
            )
            job = job_cls(job_id, connection=connection, serializer=serializer)
            try:
                job.restore(dict(zip(flat[::2], flat[1::2], strict=True)))
            except Exception as exc:
                # As RQ's own: the worker reports the job and queue a bad job came from.
                exc.job_id = job_id  # type: ignore[attr-defined]
                exc.queue = queue  # type: ignore[attr-defined]
                raise
            return job, queue


class BridgeJob(Job):
    """RQ's job, whose ``perform`` leaves out the PERSIST of its key: ``BridgeWorker`` sends it
    with the job's preparation, in the same transaction."""

    def perform(self) -> Any:
        _job_stack.push(self)
        try:
            self._result = self._execute()
        finally:
            assert self is _job_stack.pop()
        return self._result


class BridgeWorker(SimpleWorker):
    max_connection_wait_time = 2.0  # RQ's reconnection backoff cap (60 s) would delay recovery
    job_class = BridgeJob  # its PERSIST goes with the job's preparation
    outage: Outage | None = None
    in_thread = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.serializer is PickleSerializer:
            # RQ's default, passed on as None: RQ resolves None to the same serializer without
            # the check against its typing protocol (slow on Python 3.11) that it runs for every
            # Queue and Job a worker builds, several per job.
            self.serializer = None  # type: ignore[assignment]
        _quiet(self.log, self)
        # A job runner in a thread of its own (``BRIDGE_WORKER_RUNNERS``): the signals are the
        # main thread's, so its job timeout is a timer's and it sees a stop between two waits.
        self.in_thread = threading.current_thread() is not threading.main_thread()
        if self.in_thread:
            self.death_penalty_class = RunnerDeathPenalty
        # Set after RQ's constructor, which checks the queues it is given against this class:
        # plain RQ queues are welcome, only the way a job is taken from them changes.
        self.queue_class = BridgeQueue

    def subscribe(self) -> None:
        """RQ's own, with a pubsub thread that sees a stop request within PUBSUB_WAIT_S."""
        self.log.info("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]
            sleep_time=PUBSUB_WAIT_S,
            daemon=True,
            exception_handler=self._pubsub_exception_handler,
        )

    @property
    def dequeue_timeout(self) -> int:
        """RQ's wait for a job (45 s), or 1 s for a runner in a thread: a stop request reaches
        it between two waits (``heartbeat``), as no signal interrupts its wait."""
        return 1 if self.in_thread else super().dequeue_timeout

    def _install_signal_handlers(self) -> None:
        if not self.in_thread:
            super()._install_signal_handlers()
        if stopping.is_set():  # asked to stop while the loop was starting
            self._shutdown_requested_date = now()
            self._stop_requested = True

    def request_force_stop(self, signum: int, frame: FrameType | None) -> None:
        try:
            super().request_force_stop(signum, frame)
        except SystemExit:
            stopping_cold.set()
            raise

    def request_stop(self, signum: Any, frame: Any) -> None:
        stopping.set()
        # RQ raises StopRequested where the signal lands when the worker is idle; should any
        # code there swallow it, the loop still stops at its next look at this flag.
        self._stop_requested = True
        super().request_stop(signum, frame)

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """RQ's own, once per ``HEARTBEAT_EVERY_S`` at most when it carries nothing else: RQ
        sends three within a few milliseconds between two jobs (after a job, as its wait
        starts, and as a job arrives), each renewing a TTL of minutes."""
        plain = pipeline is None and timeout is None
        if plain and self.in_thread and stopping.is_set() and self._state != WorkerStatus.BUSY:
            raise StopRequested()  # between two waits for a job, or after one
        if plain and not self._idle_unwritten:
            sent = self._plain_heartbeat_at
            if sent is not None and time.monotonic() - sent < HEARTBEAT_EVERY_S:
                return
        if plain:
            self._plain_heartbeat_at = time.monotonic()
        elif timeout is not None:
            self._plain_heartbeat_at = None  # a heartbeat with another TTL: the next one counts
        if pipeline is None:
            # RQ's own sends its two commands one round trip each; it runs twice per job. An
            # idle state set just before (``set_state``) goes in the same round trip.
            with self.connection.pipeline(transaction=False) as batch:
                idle = self._idle_unwritten
                if idle:
                    super().set_state(WorkerStatus.IDLE, batch)
                super().heartbeat(timeout, pipeline=batch)
                batch.execute()
            if idle:
                self._idle_unwritten = False
                self._idle_in_redis = True
        else:
            super().heartbeat(timeout, pipeline=pipeline)
        if self.outage is not None:
            self.outage.end()

    _idle_unwritten = False
    _idle_in_redis = False  # the last state written is ``idle``
    _plain_heartbeat_at: float | None = None  # when the last heartbeat with the default TTL went
    _suspension_checked_at: float | None = None

    def check_for_suspension(self, burst: bool) -> None:
        """RQ's own (``rq suspend``), at most once per ``HEARTBEAT_EVERY_S``: RQ asks before
        every job, a round trip each."""
        checked = self._suspension_checked_at
        if checked is not None and time.monotonic() - checked < HEARTBEAT_EVERY_S:
            return
        self.send_held_forget()  # a suspended worker waits here
        super().check_for_suspension(burst)
        self._suspension_checked_at = time.monotonic()

    def set_state(self, state: str, pipeline: Any = None) -> None:
        """RQ sets ``idle`` twice between two jobs (after a job, and as its wait starts), each
        a round trip of its own, and a heartbeat follows at once: ``idle`` waits for it."""
        if state == WorkerStatus.IDLE and pipeline is None:
            self._state = state
            # A second ``idle`` with nothing in between is in Redis already.
            self._idle_unwritten = not self._idle_in_redis
            return
        self._idle_unwritten = False
        self._idle_in_redis = False
        super().set_state(state, pipeline)

    def register_death(self) -> None:
        try:
            self.send_held_forget()  # before the worker's hash says dead
        except redis.RedisError:
            self._held_forget = None  # Redis is away: RQ's cleanup ends the job (see above)
        self._idle_unwritten = False  # the worker's hash says dead from now on
        self._idle_in_redis = False
        super().register_death()

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        """RQ's own stamps the job hash's heartbeat, a round trip; a job whose result is not
        kept is deleted (success) or saved whole (failure) right after, so it is kept in
        memory for that."""
        if job.get_result_ttl(self.default_result_ttl) != 0:
            super().handle_execution_ended(job, queue, heartbeat_ttl)
            return
        job.ended_at = now()
        job.last_heartbeat = job.ended_at

    # -- a job's preparation in one transaction ---------------------------------------------
    # RQ writes a job's execution (its record, the started registry, ``busy``) in one
    # transaction and, a moment later, the worker's current job and the job's start in another.
    # Nothing reads between the two in a SimpleWorker: the first is held and sent with the second.

    _held_preparation: Any = None

    def prepare_execution(self, job: Job) -> Execution:
        """RQ's own (``rq.executions.prepare_execution``), its transaction held for
        ``prepare_job_execution``."""
        self._drop_held_preparation()
        pipeline = self.connection.pipeline()
        heartbeat_ttl = self.get_heartbeat_ttl(job)
        self.execution = Execution.create(
            job, heartbeat_ttl, pipeline=pipeline, worker_name=self.name
        )
        self.set_state(WorkerStatus.BUSY, pipeline=pipeline)
        self._held_preparation = pipeline
        return self.execution

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        """RQ's own, sent with the held execution's transaction when there is one."""
        pipeline = self._held_preparation
        self._held_preparation = None
        if pipeline is None:
            super().prepare_job_execution(job, remove_from_intermediate_queue)
            self.connection.persist(job.key)  # ``BridgeJob.perform`` leaves it out
            return
        with pipeline:
            # What RQ's ``Job.perform`` sends first, a round trip of its own: the job runs
            # however long a TTL it was queued with.
            pipeline.persist(job.key)
            self.set_current_job_id(job.id, pipeline=pipeline)
            self.set_current_job_working_time(0, pipeline=pipeline)
            heartbeat_ttl = self.get_heartbeat_ttl(job)
            self.heartbeat(heartbeat_ttl, pipeline=pipeline)
            job.heartbeat(now(), heartbeat_ttl, pipeline=pipeline)
            job.prepare_for_execution(self.name, pipeline=pipeline)
            if remove_from_intermediate_queue:
                queue = Queue(job.origin, connection=self.connection)
                pipeline.lrem(queue.intermediate_queue_key, 1, job.id)
            pipeline.execute()
        self.procline(f"Processing {job.func_name} from {job.origin} since {time.time()}")

    def execute_job(self, job: Job, queue: Queue) -> None:
        try:
            super().execute_job(job, queue)
        finally:
            self._drop_held_preparation()  # never sent if the job ended before its preparation

    def _drop_held_preparation(self) -> None:
        held, self._held_preparation = self._held_preparation, None
        if held is not None:
            held.reset()

    def run_maintenance_tasks(self) -> None:
        """RQ's own (registry cleanup, the scheduler), then webhook tries lost with a worker."""
        self.send_held_forget()
        super().run_maintenance_tasks()
        if any(queue.name == WEBHOOK_QUEUE for queue in self.queues):
            from workers.webhook_jobs import recover_lost_webhook_tries  # it imports this module

            try:
                recover_lost_webhook_tries(self.connection)
            except (redis.RedisError, StopRequested):
                raise  # StopRequested: SIGTERM while idle, raised by RQ's handler where it lands
            except Exception:  # a bug here must not stop the worker; the next sweep tries again
                log.exception("the sweep for lost webhook tries failed")

    def handle_job_success(self, job: Job, queue: Queue, started_job_registry: Any) -> None:
        execution = self.execution
        if (
            execution is None
            or job.get_result_ttl(self.default_result_ttl) != 0
            or job.repeats_left
            or job.group_id
            or job.started_at is None
            or job.ended_at is None
        ):
            super().handle_job_success(job, queue, started_job_registry)
            return
        keys = [
            self.key,
            started_job_registry.key,
            execution.key,
            ExecutionRegistry(job_id=job.id, connection=self.connection).key,
            job.key,
            job.dependents_key,
            job.dependencies_key,
        ]
        working_s = (job.ended_at - job.started_at).total_seconds()
        beat = now()
        args = [
            execution.composite_key,
            execution.id,
            repr(working_s),
            utcformat(beat),
            self.worker_ttl + 60,
        ]
        # Held until the worker's next call to Redis, which is almost always its next take: the
        # two go in one round trip (``forget_and_take``). What it will write counts from now.
        self._held_forget = _HeldForget(keys, args, job, queue, started_job_registry, execution)
        self._state = WorkerStatus.IDLE
        self._idle_unwritten = False
        self._idle_in_redis = True
        self.last_heartbeat = beat
        self._plain_heartbeat_at = time.monotonic()
        self.execution = None
        self.log.info(
            "Successfully completed job %s in %ss on worker %s", job.id, working_s, self.name
        )

    # -- a job's end, sent with the next call ---------------------------------------------------
    # A succeeded job is forgotten with the worker's next take. Every other way the worker goes
    # on first sends the held forget on its own: a look at ``rq suspend`` (it may wait there),
    # the maintenance (it reads the registries), a take from one queue, and the worker's death.
    # A worker killed while it holds one leaves its job ``started``, as one killed a moment
    # before its forget always could: RQ's registry cleanup ends it; a send job RQ runs again
    # finds its message's step recorded and sends nothing, and a webhook try's conclusion is
    # in the delivery log already.

    _held_forget: _HeldForget | None = None

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        taking = _taking.set(self)
        try:
            return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        finally:
            _taking.reset(taking)

    def forget_and_take(self, queue_keys: list[str], prefix: str) -> list[Any]:
        """The held forget, if any, and a take from ``queue_keys`` in one call: its answer,
        ``[1]`` when no queue had a job, or ``[1, queue key, job id, job hash]``."""
        while True:
            held = self._held_forget
            if held is None:
                return _FORGET_AND_TAKE(queue_keys, ["0", prefix], client=self.connection)
            found = _FORGET_AND_TAKE(
                [*held.keys, *queue_keys], ["1", prefix, *held.args], client=self.connection
            )
            self._held_forget = None  # sent: a call that raised keeps it for the next one
            if found[0] == 1:
                return found
            self._forget_rqs_way(held)  # the job has dependents: nothing was written or taken

    def send_held_forget(self) -> None:
        """The held forget, on its own."""
        if self._held_forget is not None:
            self.forget_and_take([], "")

    def _forget_rqs_way(self, held: _HeldForget) -> None:
        self.execution = held.execution
        try:
            super().handle_job_success(held.job, held.queue, held.started_job_registry)
        finally:
            self.execution = None

    @property
    def stop_requested(self) -> bool:
        return stopping.is_set() or self._shutdown_requested_date is not None

    def _start_scheduler(
        self,
        burst: bool = False,
        logging_level: str | None = "INFO",
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
    ) -> None:
        """RQ's own, with the scheduler of ``BridgeScheduler`` (RQ names its class inline): one
        for the process's life, kept when the main runner's loop is built anew after an outage,
        as it waits the outage out itself."""
        global _scheduler
        running = _scheduler
        if running is not None and running.running and not burst:
            self.scheduler = running
            return
        scheduler = BridgeScheduler(
            self.queues,
            connection=self.connection,
            logging_level=logging_level if logging_level is not None else self.log.level,
            date_format=date_format,
            log_format=log_format,
            serializer=self.serializer,
            name=SCHEDULER_NAME,
        )
        self.scheduler = scheduler
        if not burst:
            # Started whether or not another scheduler holds the queues' locks now: it tries for
            # them every REACQUIRE_LOCKS_S, and takes them within seconds of their lapse (RQ
            # starts it only at a later maintenance, every BRIDGE_MAINTENANCE_INTERVAL_S).
            _scheduler = scheduler
            scheduler.acquire_locks()  # at once, as RQ does
            scheduler.start()
            return
        scheduler.acquire_locks()
        if scheduler.acquired_locks:
            try:
                scheduler.register_birth()
                scheduler.enqueue_scheduled_jobs()
            finally:
                scheduler.release_locks()
                scheduler.register_death()

    def stop_scheduler(self) -> None:
        """RQ calls this on a stop request (in its signal handler) and in the teardown of every
        loop. On a stop, the scheduler is asked to stop (``stop_process_scheduler`` waits for
        it at the worker's end); a loop that ended on an outage leaves it running."""
        if self.scheduler is not None and self.stop_requested:
            self.scheduler.request_stop()


# The process's scheduler, once its main runner's first loop built it.
_scheduler: BridgeScheduler | None = None


def stop_process_scheduler(wait_s: float = SCHEDULER_STOP_WAIT_S) -> None:
    """At the worker's end: stop the process's scheduler, which gives its locks back (Redis
    permitting), and wait ``wait_s`` at most for it: a scheduler stuck on a Redis that does not
    answer holds nothing that outlives the process."""
    scheduler = _scheduler
    if scheduler is None:
        return
    scheduler.request_stop()
    thread = scheduler.thread
    if thread is not None and thread is not threading.current_thread():
        thread.join(wait_s)


class BridgeScheduler(RQScheduler):
    """RQ's scheduler, in a thread of the worker process rather than RQ's forked child, and
    outliving Redis outages.

    A thread: the worker process has other threads (its job runners, the renewal of its alive
    key, the metrics server), and a fork copies whatever lock one of them held at that moment, a
    log stream's among them, into a child that then waits on it for ever, its SIGTERM handler
    never run; RQ's stop waits for that child, and so the worker never exited. The thread also
    spares a process per worker.

    Outages: RQ's scheduler ends on any Redis error, and the worker restarts it only at a later
    maintenance once the dead one's lock has lapsed (up to a minute and a half without scheduled
    webhook retries). This one waits for Redis and goes on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wake = threading.Event()  # set by a stop request: every wait of the thread ends

    @property
    def should_reacquire_locks(self) -> bool:
        """Whether to try for the locks of queues it does not hold now: every
        ``REACQUIRE_LOCKS_S``. RQ tries ten minutes after its last try (its comparison of the
        queue names' list with the set of locks is never equal), so a queue whose lock it found
        taken by another scheduler went unscheduled that long after the other one died."""
        if set(self._queue_names) <= self._acquired_locks:
            return False
        tried = self.lock_acquisition_time
        return tried is None or (datetime.now() - tried).total_seconds() >= REACQUIRE_LOCKS_S

    @property
    def thread(self) -> threading.Thread | None:
        return cast(threading.Thread | None, self._process)

    @property
    def running(self) -> bool:
        thread = self.thread
        return thread is not None and thread.is_alive()

    def start(self) -> threading.Thread:
        """The thread, in RQ's ``_process`` (its maintenance starts a scheduler anew when that
        is not ``is_alive()``)."""
        self._status = self.Status.STARTED
        thread = threading.Thread(target=self.work, name="rq-scheduler", daemon=True)
        self._process = thread  # type: ignore[assignment]
        thread.start()
        return thread

    def request_stop(self, signum: Any = None, frame: Any = None) -> None:
        self._stop_requested = True
        self._wake.set()

    def work(self) -> None:
        try:
            self._work()
        finally:
            self._give_back()

    def _give_back(self) -> None:
        """At the stop, whatever the loop was doing then (waiting for Redis, or backing off):
        the queues' locks back and the scheduler's key gone, if Redis answers; otherwise the
        locks lapse (their TTL, a minute)."""
        if self._status == self.Status.STOPPED and not self._acquired_locks:
            return  # the loop's own stop did it
        try:
            self.stop()
        except redis.RedisError as exc:
            log.debug("the scheduler could not give its locks back: %s", exc)

    def _work(self) -> None:
        outage = Outage(log, "scheduler")
        failures = 0
        while not self._stop_requested:
            started = time.monotonic()
            try:
                self._schedule()
                return
            except Exception as exc:
                if self._stop_requested:
                    return
                error = exc
            failure: Exception | None = error
            if redis_unavailable(error):
                # Out of the except block: an error while waiting must not chain to this one,
                # which would make any answer look like the outage still going on.
                outage.begin(error, "the scheduler waits and resumes by itself")
                failure = self._wait_for_redis(outage)
            if failure is None:
                continue
            # Anything else (a job that cannot be loaded, a bug, Redis refusing our user after a
            # restart with ACLs): one JSON line with the traceback in exc_info, then start again,
            # instead of no scheduler until the worker's next maintenance. A run that lasted a
            # while starts the backoff anew.
            failures = 1 if time.monotonic() - started > FAILURE_RESET_S else failures + 1
            pause = min(0.5 * 2 ** min(failures, 6), 30.0)
            log.error(
                "the scheduler failed; it starts again in %.1f s",
                pause,
                exc_info=failure,
                extra={"failures": failures},
            )
            self._wake.wait(pause)

    def _schedule(self) -> None:
        """RQ's loop (``RQScheduler.work``), without its signal handlers (the worker's own ask
        it to stop) and with waits that a stop request ends."""
        self.register_birth()
        while not self._stop_requested:
            if self.should_reacquire_locks:
                self.acquire_locks()
            self.heartbeat()
            self.enqueue_scheduled_jobs()
            self._wake.wait(self.interval)
        self.stop()

    def _wait_for_redis(self, outage: Outage) -> Exception | None:
        """Probe until Redis takes writes again (None: go on) or answers with an error that is
        no outage (returned, a failure like any other)."""
        delay = 0.2
        while not self._stop_requested:
            try:
                probe_writable(self.connection)
            except redis.RedisError as exc:
                if not redis_unavailable(exc):
                    outage.end()
                    return exc
                self._wake.wait(delay)
                delay = min(delay * 2, 2.0)
                continue
            outage.end()
            return None
        return None

    def enqueue_scheduled_jobs(self) -> None:
        """RQ's own, except that one job that cannot be read is taken off the schedule and
        logged, instead of failing every pass and so holding back every other scheduled job."""
        self._status = self.Status.WORKING
        if not self._scheduled_job_registries and self._acquired_locks:
            self.prepare_registries()
        for registry in self._scheduled_job_registries:
            job_ids = registry.get_jobs_to_schedule(current_timestamp())
            if not job_ids:
                continue
            queue = Queue(registry.name, connection=self.connection, serializer=self.serializer)
            jobs: list[Job] = []
            for job_id in job_ids:
                try:
                    job = Job.fetch(job_id, connection=self.connection, serializer=self.serializer)
                except NoSuchJobError:
                    continue
                except Exception as exc:
                    if redis_unavailable(exc):
                        raise
                    log.error(
                        "a scheduled job cannot be read; it is taken off the schedule",
                        exc_info=True,
                        extra={"job_id": job_id, "queue": registry.name},
                    )
                    continue
                jobs.append(job)
            with self.connection.pipeline() as pipeline:
                for job in jobs:
                    front = job.should_enqueue_at_front()
                    queue._enqueue_job(job, pipeline=pipeline, at_front=front)
                for job_id in job_ids:
                    registry.remove(job_id, pipeline=pipeline)
                pipeline.execute()
        self._status = self.Status.STARTED


class _OutageFilter(logging.Filter):
    """RQ logs each reconnection try (and a traceback when it quits on a Redis error); the worker
    turns them into its one outage line."""

    def __init__(self) -> None:
        super().__init__()
        self.worker: BridgeWorker | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        reconnecting = "could not connect to Redis" in record.getMessage()
        if not reconnecting and not redis_unavailable(error):
            return True
        outage = self.worker.outage if self.worker is not None else None
        if outage is not None:
            outage.begin(
                error or ConnectionError(record.getMessage()),
                "the worker waits and resumes by itself",
            )
        return False


_filter = _OutageFilter()


def _quiet(logger: logging.Logger, worker: BridgeWorker) -> None:
    _filter.worker = worker
    if _filter not in logger.filters:
        logger.addFilter(_filter)

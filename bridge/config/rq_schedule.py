"""An RQ job put on the scheduled registry inside a caller's MULTI, so it commits with the
caller's other writes or not at all.

Written by hand because ``ScheduledJobRegistry.schedule`` ignores the pipeline it is given,
which would leak a registry entry when the surrounding transaction aborts.
"""

from __future__ import annotations

import math
from typing import Any

from redis.client import Pipeline
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry


def schedule_job(
    pipe: Pipeline, queue: Queue, func: str, at_s: float, *, job_id: str, **options: Any
) -> Job:
    """Queue on ``pipe`` the job ``func`` (``options`` as ``Queue.create_job`` takes them) to
    run at epoch second ``at_s``. Rounded up: RQ's registry keeps whole seconds, and a job must
    never run before its time. A worker started ``--with-scheduler`` moves it to the queue."""
    job = queue.create_job(func, job_id=job_id, status=JobStatus.SCHEDULED, **options)
    job.origin = queue.name
    pipe.sadd(queue.redis_queues_keys, queue.key)
    job.save(pipeline=pipe)
    pipe.zadd(ScheduledJobRegistry(queue=queue).key, {job_id: math.ceil(at_s)})
    return job

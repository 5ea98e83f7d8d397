"""Which worker process holds a message's send lock, and whether it is still alive.

A send lock (``lock:send:<id>``) lives for 4 times the UCWA timeout + 30 s (150 s by default), so
that it cannot lapse while its run's POST, a token grant and a retried POST are out. A worker
killed while it held one used to leave the message, and its person's line, waiting for that
whole TTL. With job runners that became likely: while one runner's POST is out, another holds
its next message's lock and waits for the slot, so most kills of a busy worker leave one.

So a worker process names itself in the locks it takes (``<process>|<random>``) and keeps
``worker:alive:<process>`` in Redis with a short TTL (``ALIVE_TTL_S``), renewed by a thread
every ``RENEW_S``. A run that finds a message's lock held by a process whose key has expired
takes the lock over at once, in the script that takes any lock (``LOCK``): the same round trip
as before, the record read after it under the lock. The poller's sweep counts such a lock as
gone (``HELD_BY_THE_LIVING``).

Taking a dead holder's lock sooner changes nothing else: a message the holder had not claimed
is claimed by a compare-and-set, so two runs can never both post it, and one it had claimed is
judged by the time since its claim (``Sender._resolve_ambiguous``), never sent again. A process
that is alive but stalled past ``ALIVE_TTL_S`` (stopped, frozen) is the case the lock's TTL
already had, only sooner. A lock without a process name (a sender built outside a worker
process) is only ever given up by its TTL.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
import uuid

import redis
from redis.client import Pipeline

log = logging.getLogger(__name__)

ALIVE_PREFIX = "worker:alive:"
ALIVE_TTL_S = 15.0
RENEW_S = 3.0
RETRY_S = 0.5
SEPARATOR = "|"

# KEYS[1] the lock; ARGV: the run's token, the lock's TTL in ms, ALIVE_PREFIX, SEPARATOR.
# {holder, 1 when it was taken over}: the run's token when the lock was free or held by a
# process that is gone (it is the run's now), else the holder's.
LOCK = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {ARGV[1], 0} end
local held = redis.call('GET', KEYS[1])
local cut = string.find(held, ARGV[4], 1, true)
if cut and redis.call('EXISTS', ARGV[3] .. string.sub(held, 1, cut - 1)) == 0 then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return {ARGV[1], 1}
end
return {held, 0}
"""

# KEYS[1] a lock; ARGV[1] ALIVE_PREFIX, ARGV[2] SEPARATOR. 1 when it is held by a process that
# is alive, or by a holder that names none; 0 when it is free or its process is gone.
HELD_BY_THE_LIVING = """
local held = redis.call('GET', KEYS[1])
if not held then return 0 end
local cut = string.find(held, ARGV[2], 1, true)
if not cut then return 1 end
return redis.call('EXISTS', ARGV[1] .. string.sub(held, 1, cut - 1))
"""


def queue_lock(pipe: Pipeline, lock: str, token: bytes, ttl_s: float) -> None:
    """Queue taking ``lock`` for ``token`` (``LOCK``): its answer is [holder, taken over]."""
    pipe.eval(LOCK, 1, lock, token, int(ttl_s * 1000), ALIVE_PREFIX, SEPARATOR)


class ProcessLiveness:
    """This worker process's name in the locks it takes, and the key that says it is alive."""

    def __init__(
        self, client: redis.Redis, ttl_s: float = ALIVE_TTL_S, every_s: float = RENEW_S
    ) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self.every_s = every_s
        host = socket.gethostname().replace(SEPARATOR, "_")
        self.name = f"{host}:{os.getpid()}:{secrets.token_hex(4)}"
        self.key = ALIVE_PREFIX + self.name
        self._stop = threading.Event()
        self._renewed_at: float | None = None  # time.monotonic() of the last renewal

    def token(self) -> bytes:
        """A lock value of this process: its name, then a random part. Only while its key was
        written recently (it certainly still exists): before the first renewal, or after
        renewals failed, a plain random value, left to the lock's TTL like any other."""
        last = self._renewed_at
        if last is None or time.monotonic() - last > self.ttl_s - 2 * self.every_s:
            return uuid.uuid4().hex.encode()
        return f"{self.name}{SEPARATOR}{uuid.uuid4().hex}".encode()

    def renew(self) -> None:
        self.client.set(self.key, b"1", px=int(self.ttl_s * 1000))
        self._renewed_at = time.monotonic()

    def start(self) -> ProcessLiveness:
        """Renew from a thread: at once, then every ``every_s`` (every ``RETRY_S`` while Redis
        does not answer; the worker's own outage lines say so)."""
        threading.Thread(target=self._run, name="worker-alive", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop renewing; the key expires by itself. Not waited for: a renewal stuck on a Redis
        that is down must not hold up the process's exit (the thread is a daemon)."""
        self._stop.set()

    def _run(self) -> None:
        wait = 0.0
        while not self._stop.wait(wait):
            try:
                self.renew()
            except redis.RedisError as exc:
                log.debug("could not renew this worker's alive key: %s", exc)
                wait = RETRY_S
            else:
                wait = self.every_s

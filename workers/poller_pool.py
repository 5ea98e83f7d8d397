"""The poller process's share of the accounts: a ``PollerPool`` heartbeats in the pool's
membership, follows ``bridge.session.pool.plan`` each round and runs a ``Poller`` (one account)
for every lease it takes; ``ucwa-bridge poller`` runs one per process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import redis

from bridge.config.accounts import Account
from bridge.config.redis_faults import Outage, redis_unavailable
from bridge.session.pool import Membership, plan
from workers.poller import Poller, PollerSettings

log = logging.getLogger("ucwa_bridge.poller")


Build = Callable[[Account, str, Outage], Poller]


class PollerPool:
    """This process's share of the accounts: ``run()`` until ``stop()`` (a signal handler may
    call it), then every account it serves is released, each once its reader has stopped.

    Each round (a third of the lease TTL, at most half a second) it heartbeats, reads who holds
    every lease, and follows ``bridge.session.pool.plan``: it gives surplus accounts up and
    takes free ones up to its target, starting a ``Poller`` (from ``build``) per lease it takes.
    """

    def __init__(
        self,
        client: redis.Redis,
        accounts: Sequence[Account],
        build: Build,
        settings: PollerSettings | None = None,
        member: str | None = None,
    ) -> None:
        self.settings = settings or PollerSettings()
        self.membership = Membership(client, self.settings.lease_ttl_s, member)
        self.member = self.membership.member
        # One outage for the process: one line when Redis goes, not one per account.
        self.outage = Outage(log, "poller")
        self.pollers = {a.key: build(a, self.member, self.outage) for a in accounts}
        self.round_s = min(self.settings.lease_ttl_s / 3, 0.5)
        self.stopping = threading.Event()
        self._free_since: dict[str, float] = {}
        self._standing_by: set[str] = set()  # accounts whose stand-by line was logged
        self._shape: tuple[int, int] | None = None  # (members, target) last logged
        self._joined = False

    def stop(self, *_: object) -> None:
        """Stop the pool (safe from a signal handler: it only sets an event)."""
        self.stopping.set()

    def run(self) -> None:
        log.info(
            "poller pool starting", extra={"member": self.member, "accounts": len(self.pollers)}
        )
        while not self.stopping.is_set():
            try:
                self._round()
            except redis.RedisError as exc:
                if not redis_unavailable(exc):
                    log.warning("poller pool round failed: %s", exc)
                self.outage.begin(exc, "serving the accounts it has, sharing them when it is back")
            else:
                self.outage.end()
            self.stopping.wait(self.round_s)
        self._shutdown()

    def serving(self) -> list[str]:
        """The accounts (ids) this process serves now."""
        return [p.account_id for p in self.pollers.values() if p.serving]

    def _round(self) -> None:
        members = self.membership.beat()
        if not self._joined:
            # Pools started together see each other before any takes a share: fewer handovers.
            self._joined = True
            return
        keys = list(self.pollers)
        leases = self.membership.holders(self.pollers[k].lease.key for k in keys)
        holders = dict(zip(keys, leases, strict=True))
        serving = {k for k, p in self.pollers.items() if p.serving}
        busy = {k for k, p in self.pollers.items() if p.running} - serving
        now = time.monotonic()
        for key, holder in holders.items():
            if holder is None and key not in serving | busy:
                self._free_since.setdefault(key, now)
            else:
                self._free_since.pop(key, None)
        # A free account nobody took for two TTLs (members that disagree for a moment about
        # who is live) is taken by whoever sees it, whatever its target.
        overdue = {
            k for k, t in self._free_since.items() if now - t > 2 * self.settings.lease_ttl_s
        }
        step = plan(keys, self.member, members, holders, serving, busy, overdue)
        for key in step.release:
            poller = self.pollers[key]
            log.info(
                "handing the account over to another poller",
                extra={"account": poller.account_id, "target": step.target},
            )
            poller.stop(handover=True)
        needed = step.needed
        for key in step.acquire:
            if needed <= 0:
                break
            needed -= self._take(key)
        for key in step.rescue:
            self._take(key)
        self._log_standby(holders)
        if self._shape != (len(members), step.target):
            self._shape = (len(members), step.target)
            log.info(
                "poller pool: %d live members, this one's share is %d of %d accounts",
                len(members),
                step.target,
                len(keys),
                extra={"member": self.member, "members": len(members), "target": step.target},
            )

    def _take(self, key: str) -> bool:
        poller = self.pollers[key]
        if self.stopping.is_set() or poller.running or not poller.lease.try_acquire():
            return False
        self._standing_by.discard(key)
        poller.start()
        return True

    def _log_standby(self, holders: dict[str, str | None]) -> None:
        for key, holder in holders.items():
            if holder in (None, self.member) or key in self._standing_by:
                continue
            if not self.pollers[key].running:
                self._standing_by.add(key)
                self.pollers[key]._log_standby()

    def _shutdown(self) -> None:
        running = [p for p in self.pollers.values() if p.running]
        log.info("shutting down", extra={"member": self.member, "accounts": len(running)})
        try:  # first, so that the others count without this process from now on
            self.membership.leave()
        except redis.RedisError as exc:
            log.warning("could not leave the poller pool (its entry expires): %s", exc)
        for poller in running:
            poller.stop()
        deadline = time.monotonic() + 10.0
        for poller in running:
            poller.join(max(0.0, deadline - time.monotonic()))

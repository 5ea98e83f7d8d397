"""The poller: owns an account's UCWA application and its event channel, one owner per account.

A ``Poller`` serves one account while it holds the account's lease: it keeps one event GET
outstanding, publishes the session for workers, settles outbound messages and accepts incoming
invitations. A ``PollerPool`` runs in each poller process over every configured account and
shares them with the other processes (``bridge.session.pool``): it takes the leases of its
share, starts their pollers and stops them when it gives an account up.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from bridge.config.redis_faults import Outage, probe_writable, redis_unavailable
from bridge.config.redis_text import text_map
from bridge.inbound.event_sink import EventSink, InboundHook
from bridge.inbound.quarantine import passes_through
from bridge.observability.logging import log_context
from bridge.observability.metrics import count_quarantined, observe_ucwa_request
from bridge.outbound.line_sweep import restart_stalled_lines
from bridge.outbound.messages import (
    DEFAULT_ACCOUNT,
    LINES_KEY,
    MessageStore,
    RecipientQueue,
    recipient_key,
)
from bridge.outbound.outcomes import Outbound, StatusHook
from bridge.session.bootstrap import Application, Bootstrap
from bridge.session.client import UcwaClient, host_of
from bridge.session.conversations import ConversationRegistry
from bridge.session.lease import LeaseLost, PollerLease
from bridge.session.store import Session, SessionStore
from bridge.session.transport import InterruptibleTransport, TransportOptions
from bridge.ucwa import errors as ue
from bridge.ucwa.auth import Credentials
from bridge.ucwa.events import parse_events
from bridge.ucwa.links import with_query
from bridge.ucwa.messages import HttpResponse
from bridge.ucwa.retry import backoff_delay

log = logging.getLogger("ucwa_bridge.poller")


@dataclass(frozen=True)
class PollerSettings:
    """Timings of the poller (seconds unless named otherwise)."""

    event_timeout_s: int = 180  # the P-GET ``timeout`` parameter (180..1800)
    read_margin_s: float = 30.0  # client read timeout = event timeout + margin
    keepalive_s: float = 150.0  # reportMyActivity cadence (UCWA wants < 4 min)
    lease_ttl_s: float = 5.0
    idle_conversation_s: float = 600.0
    sweep_s: float = 5.0
    token_renew_margin_s: float = 300.0
    backoff_cap_s: float = 30.0
    record_ttl_s: int = 7 * 86_400  # BRIDGE_RECORD_TTL_S: for the keys kept beside a record


# Lines written before the set of lines existed are seeded into it once per process.
_SEEDING = threading.Lock()
_lines_seeded = threading.Event()


class Poller:
    """One account's unit. A pool takes the account's lease, then ``start()``s it; ``stop()``
    ends it promptly (its parked event GET is cut short) and its lease is released only once
    its event reader has stopped, so an account never has two readers."""

    def __init__(
        self,
        client: redis.Redis,
        credentials: Credentials,
        discovery_url: str,
        settings: PollerSettings | None = None,
        inbound_hook: InboundHook | None = None,
        on_final: StatusHook | None = None,
        transport_options: TransportOptions | None = None,
        account_id: str = DEFAULT_ACCOUNT,
        holder: str | None = None,
        outage: Outage | None = None,
    ) -> None:
        self.transport_options = transport_options or TransportOptions()
        self.redis = client
        self.credentials = credentials
        self.account = credentials.username.lower()  # the name of the account's Redis state
        self.account_id = account_id  # the name callers, lines and logs use
        self.discovery_url = discovery_url
        self.settings = settings or PollerSettings()
        self.lease = PollerLease(client, self.account, self.settings.lease_ttl_s)
        if holder is not None:
            self.lease.holder = holder  # the pool member's id: who holds it, for everyone
        self.sessions = SessionStore(client, self.account)
        self.registry = ConversationRegistry(client, self.account, account_id)
        store = MessageStore(client, record_ttl_s=self.settings.record_ttl_s)
        self.outbound = Outbound(client, store, on_final, self.account)
        self.sink = EventSink(client, self.account, self.outbound, inbound_hook, account_id)
        self.stopping = threading.Event()
        self._lost = threading.Event()
        self.outage = outage or Outage(log, "poller")
        self._ucwa: UcwaClient | None = None
        self._reader: InterruptibleTransport | None = None  # the transport of the event GET
        self._tender: InterruptibleTransport | None = None  # the transport of the background duties
        self._thread: threading.Thread | None = None
        self._handover = False
        self.app: Application | None = None
        self.generation = 0

    # -- lifecycle ------------------------------------------------------------------------------
    def _log_standby(self) -> None:
        """Once per stand-by: which poller holds the lease (its ``lease_holder`` in its own
        "poller active" line), when Redis can say."""
        try:
            current = PollerLease.current(self.redis, self.account)
        except redis.RedisError:
            current = None
        extra: dict[str, Any] = {"account": self.account_id}
        if current:
            extra.update(lease_holder=current.holder, fence=current.fence)
        log.info("standing by: another poller holds the lease", extra=extra)

    def start(self) -> None:
        """Serve the account in a thread of its own; the caller has just taken its lease."""
        if not self.lease.held:
            raise LeaseLost(self.lease.key)
        self.stopping.clear()
        self._handover = False
        self.app = None
        self._thread = threading.Thread(
            target=self._run, name=f"poller-{self.account_id}", daemon=True
        )
        self._thread.start()

    def stop(self, handover: bool = False) -> None:
        """Stop serving: the parked event GET ends now, the lease goes once the reader stopped.

        ``handover``: another poller takes the account over at once (the pool rebalances), so the
        session stays ``ready`` for the workers instead of saying ``stopped``."""
        self._handover = handover
        self.stopping.set()
        self._abort(self._reader)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until it stopped and gave its lease up; False if still running at ``timeout``."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self.running

    @property
    def running(self) -> bool:
        """Whether its thread runs: it serves the account or is stopping (still leased)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def serving(self) -> bool:
        """Running and not asked to stop."""
        return self.running and not self.stopping.is_set()

    def _run(self) -> None:
        with log_context(account=self.account_id):
            log.info(
                "poller active",
                extra={"fence": self.lease.fence, "lease_holder": self.lease.holder},
            )
            self._lost.clear()
            keeper = threading.Thread(
                target=self._keep, name=f"poller-keeper-{self.account_id}", daemon=True
            )
            tender = threading.Thread(
                target=self._tend, name=f"poller-tender-{self.account_id}", daemon=True
            )
            keeper.start()
            tender.start()
            try:
                self._serve()
            except LeaseLost:
                log.warning("lease lost; standing by")
            except redis.RedisError as exc:
                # Nothing unsaved is lost: the cursor only moves with the batch it belongs to.
                # Stand by; the pool takes the lease again once Redis answers (another may).
                if redis_unavailable(exc):
                    self.outage.begin(exc, "standing by")
                else:
                    log.warning("Redis error, standing by: %s", exc, exc_info=True)
            finally:
                # The reader has returned: only now may another poller read this account.
                self._lost.set()
                self._abort(self._tender)
                keeper.join(timeout=5)
                tender.join(timeout=5)
                if self.stopping.is_set() and not self._handover:
                    self._mark_stopped()
                self._release_lease()
                if self._ucwa is not None:
                    self._ucwa.close()
                    self._ucwa = None
                if self.stopping.is_set():
                    log.info("stopped serving the account", extra={"handover": self._handover})

    @staticmethod
    def _abort(transport: InterruptibleTransport | None) -> None:
        if transport is not None:
            transport.abort()

    def _mark_stopped(self) -> None:
        """Say in the session why it is not ready, unless another poller has taken it over.

        The UCWA application is left alive: the next active poller re-attaches to it."""
        try:
            with self.redis.pipeline() as pipe:
                self.lease.check(pipe)
                pipe.multi()
                self.sessions.set_state("stopped", pipe)
                pipe.execute()
        except (LeaseLost, redis.WatchError):
            pass  # the session is another poller's now
        except redis.RedisError as exc:
            log.warning("could not mark the session stopped: %s", exc)

    def _release_lease(self) -> None:
        """Give the lease up now, so another poller takes over at once instead of after its TTL."""
        try:
            self.lease.release()
        except redis.RedisError as exc:
            log.warning(
                "could not release the lease; another poller takes over when it expires: %s", exc
            )

    # -- the active poller ----------------------------------------------------------------------
    def _serve(self) -> None:
        failures = 0
        while self._active():
            try:
                cursor = self._bootstrap()
                failures = 0
                self.sink.settle()  # what a poller before this one held but did not settle
                self._listen(cursor)
            except (ue.ApplicationGone, ue.ResourceNotFound) as exc:
                log.warning("application gone, rebuilding: %s", exc)
                self.sessions.set_state("rebuilding")
            except (ue.CredentialsRejected, ue.GrantNotSupported) as exc:
                # Account lockout risk: back off hard and say why in readiness.
                self.sessions.set_state("credentials_rejected")
                log.error("UCWA rejected the credentials: %s", exc)
                self._sleep(max(60.0, self.settings.backoff_cap_s))
            except Exception as exc:
                # Whatever a UCWA answer makes the code raise (a UcwaError, a socket error, or a
                # bug met by input nobody foresaw), the session is rebuilt after a backoff; only
                # the infrastructure (Redis, the lease) and a shutdown leave this loop.
                if passes_through(exc):
                    raise
                if not self._active():
                    return
                failures += 1
                self.sessions.set_state("down")
                delay = backoff_delay(failures, 0.5, self.settings.backoff_cap_s, 0.2)
                expected = isinstance(exc, ue.UcwaError | OSError)
                log.warning(
                    "UCWA session failed (%s: %s); retrying in %.1fs",
                    type(exc).__name__,
                    exc,
                    delay,
                    exc_info=not expected,
                )
                self._sleep(delay)

    def _active(self) -> bool:
        return not self.stopping.is_set() and not self._lost.is_set()

    def _client(self) -> UcwaClient:
        if self._ucwa is None:
            # Only the event GET is cut short on stop: a batch being applied (its invitations
            # accepted) finishes, and the reader stops before the next GET.
            self._reader = InterruptibleTransport(
                frozenset({"events"}),
                read_timeout=self.settings.event_timeout_s + self.settings.read_margin_s,
                observer=observe_ucwa_request,
                options=self.transport_options,
            )
            if not self._active():  # stopped while this was built: stop() saw no transport
                self._reader.abort()
            self._ucwa = UcwaClient(self.credentials, self._reader)
        return self._ucwa

    def _bootstrap(self) -> str:
        ucwa = self._client()
        app = Bootstrap(ucwa, self.credentials.username, self.discovery_url).run()
        ucwa.base_url = app.base_url
        self.app = app
        saved = text_map(self.redis.hgetall(self._cursor_key()))
        same_app = saved.get("application", "") == app.href
        with self.redis.pipeline() as pipe:
            self.lease.check(pipe)
            pipe.multi()
            if same_app and saved.get("generation"):
                self.generation = int(saved["generation"])
            else:
                self.generation = int(self.redis.incr(f"session:{self.account}:generation"))
                self.registry.forget_live_state(pipe)
            self.sessions.publish(self._session(app), pipe)
            pipe.hset(
                self._cursor_key(),
                mapping={"application": app.href, "generation": str(self.generation)},
            )
            pipe.execute()
        cursor = saved.get("cursor", "") if same_app else ""
        log.info(
            "UCWA session ready",
            extra={"generation": self.generation, "reattached": not app.created},
        )
        return cursor or with_query(app.events_href, {"timeout": self.settings.event_timeout_s})

    def _session(self, app: Application) -> Session:
        ucwa = self._client()
        token = ucwa.token()
        return Session(
            account=self.account,
            generation=self.generation,
            base_url=app.base_url,
            application_href=app.href,
            token=token.access_token if token else "",
            token_expires_at=token.expires_at.timestamp() if token else 0.0,
            token_url="",
            links=dict(app.links),
            state="ready",
            poller=self.lease.holder,
            fence=self.lease.fence or 0,
        )

    def _listen(self, cursor: str) -> None:
        ucwa = self._client()
        failures = 0
        read_timeout = self.settings.event_timeout_s + self.settings.read_margin_s
        while self._active():
            try:
                response = ucwa.request("GET", cursor, read_timeout=read_timeout, kind="events")
            except ue.PGetReplaced:
                # Ours was replaced: only another reader can do that. Keep the cursor and re-park.
                log.warning("event GET replaced (another reader on this application?)")
                continue
            except (ue.ApplicationGone, ue.ResourceNotFound, ue.CredentialsRejected):
                raise
            except ue.UntrustedLink:  # a cursor off the session's hosts: rebuild the session
                raise
            except ue.UcwaError as exc:
                if not self._active():
                    return
                failures += 1
                delay = backoff_delay(failures, 0.2, self.settings.backoff_cap_s, 0.2)
                log.warning("event GET failed (%s); same cursor in %.1fs", exc, delay)
                self._sleep(delay)
                continue
            failures = 0
            cursor = self._take(response)

    def _take(self, response: HttpResponse) -> str:
        """Apply one event batch and return the cursor after it. Whatever one batch makes the
        code raise, it is quarantined and the cursor moves on: no input stops the event loop."""
        app = self.app
        assert app is not None
        try:
            batch = parse_events(response.json())
            next_cursor = batch.cursor()
        except ue.ProtocolViolation as exc:
            # Nothing says where to go on: quarantine the answer, restart from the application's
            # event link (as after a resync, live conversation state is then relearned).
            restart = with_query(app.events_href, {"timeout": self.settings.event_timeout_s})
            self._quarantine_batch(exc, response.text, restart)
            return restart
        self._client().check(next_cursor.href, "event channel")  # never saved off the session
        try:
            return self._apply(batch, next_cursor.href, next_cursor.drop_transient_state)
        except Exception as exc:
            if passes_through(exc) or isinstance(exc, ue.UcwaError):
                raise
            self._quarantine_batch(exc, batch, next_cursor.href)
            return next_cursor.href

    def _quarantine_batch(self, error: BaseException, item: object, cursor: str) -> None:
        with self.redis.pipeline() as pipe:
            self.lease.check(pipe)
            pipe.multi()
            self.sink.quarantine.record(pipe, "batch", error, item)
            pipe.hset(self._cursor_key(), "cursor", cursor)
            self.sessions.pulse(pipe=pipe)
            pipe.execute()
        count_quarantined("batch", 1)

    def _apply(self, batch: object, cursor: str, drop_state: bool) -> str:
        from bridge.ucwa.events import EventBatch

        assert isinstance(batch, EventBatch)
        app = self.app
        assert app is not None
        base = app.base_url
        if drop_state:
            log.warning("event channel resynced or resumed: dropping live conversation state")
        notices = self.sink.notices(batch, base)
        ucwa = self._client()
        for accept in _accepts(notices, base):
            try:  # accept before the cursor moves: a crash re-delivers and we accept again
                ucwa.request("POST", accept, kind="accept")
            except (ue.UcwaError, ValueError) as exc:  # ValueError: an href that is no URL
                log.warning("could not accept an incoming invitation: %s", exc)
        if drop_state:
            cursor = with_query(cursor, {"timeout": self.settings.event_timeout_s})
        with self.redis.pipeline() as pipe:
            self.lease.check(pipe)
            pipe.multi()
            if drop_state:
                self.registry.forget_live_state(pipe)
            self.sink.note_operations(batch, base, pipe)
            result = self.sink.apply_state(notices, self.generation, base, pipe)
            pipe.hset(self._cursor_key(), "cursor", cursor)
            self.sessions.pulse(pipe=pipe)
            answers = pipe.execute()
        if result.held:
            self.sink.settle(result, answers)  # the outcomes the transaction held
        count_quarantined("event", result.quarantined)
        return cursor

    # -- background duties ----------------------------------------------------------------------
    def _keep(self) -> None:
        """Lease renewal, every third of its TTL, and nothing else: however slow UCWA answers
        the duties of ``_tend``, the lease never lapses for it."""
        with log_context(account=self.account_id):
            while not self._lost.wait(self.settings.lease_ttl_s / 3):
                try:
                    # After an outage longer than the lease, take it back at once (same fence,
                    # only if nobody took it meanwhile) rather than when the event GET returns.
                    self.lease.renew_or_reclaim()
                except LeaseLost:
                    self._lost.set()
                    self._abort(self._reader)
                    self._abort(self._tender)
                    return
                except redis.RedisError as exc:
                    if not redis_unavailable(exc):
                        log.warning("lease renewal failed: %s", exc)
                    self.outage.begin(
                        exc, "keeping the session, renewing the lease when it is back"
                    )

    def _tend(self) -> None:
        """Keep-alive, token renewal, idle conversations and the FIFO sweep."""
        with log_context(account=self.account_id):
            self._tender = InterruptibleTransport(
                None, observer=observe_ucwa_request, options=self.transport_options
            )
            if self._lost.is_set():
                self._tender.abort()
            ucwa = UcwaClient(self.credentials, self._tender)
            try:
                self._tend_with(ucwa)
            finally:
                ucwa.close()

    def _tend_with(self, ucwa: UcwaClient) -> None:
        last_activity = last_sweep = time.monotonic()
        while not self._lost.wait(self.settings.lease_ttl_s / 3):
            app = self.app
            try:
                # Inside the try: a Redis error here must not end the thread.
                if self.outage.active:  # renewal alone also succeeds on a full server
                    probe_writable(self.redis)
                if app is None or self.sessions.load() is None:
                    self.outage.end()
                    continue
                ucwa.base_url = app.base_url
                self._refresh_token(ucwa, app)
                now = time.monotonic()
                if now - last_activity >= self.settings.keepalive_s:
                    last_activity = now
                    href = app.links.get("reportMyActivity")
                    if href:
                        ucwa.request("POST", href, kind="reportMyActivity")
                if now - last_sweep >= self.settings.sweep_s:
                    last_sweep = now
                    self._sweep(ucwa)
            except ue.UcwaError as exc:
                if not self._lost.is_set():
                    log.warning("keep-alive step failed: %s", exc)
            except redis.RedisError as exc:
                if not redis_unavailable(exc):
                    log.warning("keep-alive Redis step failed: %s", exc)
                self.outage.begin(exc, "keeping the session, renewing the lease when it is back")
            else:
                self.outage.end()

    def _refresh_token(self, ucwa: UcwaClient, app: Application) -> None:
        session = self.sessions.load()
        if session is None or session.generation != self.generation:
            return
        ucwa.adopt(app.base_url, session.token, session.token_expires_at)
        host = host_of(app.base_url)
        if time.time() < session.token_expires_at - self.settings.token_renew_margin_s:
            return
        ucwa.oauth.forget(host)
        ucwa.request("GET", app.href, kind="application")  # 401 → challenge → fresh grant
        token = ucwa.token(host)
        if token is not None:
            self.sessions.replace_token(
                self.generation, token.access_token, token.expires_at.timestamp()
            )
            main = self._ucwa
            if main is not None:
                main.seed_token(token.access_token, token.expires_at.timestamp(), host)

    def _sweep(self, ucwa: UcwaClient) -> None:
        """End the account's idle conversations with nothing waiting, and restart its stalled
        recipient lines (each account's poller sweeps its own lines only)."""
        fifo = RecipientQueue(self.redis)
        for conv in self.registry.idle(self.settings.idle_conversation_s):
            stop = conv.links.get("stopMessaging")
            line = recipient_key(conv.remote, None, self.account_id) if conv.remote else None
            pending = fifo.head(line) if line else None
            if stop and pending is None and conv.generation == self.generation:
                try:
                    ucwa.request("POST", stop, kind="stopMessaging")
                except ue.UcwaError as exc:
                    log.info("stopping idle conversation failed: %s", exc)
        with _SEEDING:
            if not _lines_seeded.is_set():
                self._seed_lines()
        stale = time.time() - 2 * self.settings.sweep_s
        restart_stalled_lines(self.redis, self.outbound, self.account_id, stale)

    def _seed_lines(self) -> None:
        """Once per process (whatever number of accounts it serves): lines written before the
        set of lines existed join it (one scan of the keyspace, on upgrade; every later sweep
        reads only the set)."""
        with self.redis.pipeline(transaction=False) as pipe:
            for key in self.redis.scan_iter(match="rcpt:*:fifo", count=1000):
                pipe.sadd(LINES_KEY, key.decode()[len("rcpt:") : -len(":fifo")])
            pipe.execute()
        _lines_seeded.set()

    def _cursor_key(self) -> str:
        return f"poller:{self.account}:cursor"

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds * random.uniform(0.9, 1.1)
        while self._active() and time.monotonic() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


def _accepts(notices: Sequence[object], base: str) -> list[str]:
    from bridge.ucwa.links import resolve
    from bridge.ucwa.notices import IncomingInvitation

    return [
        resolve(base, n.accept_href)
        for n in notices
        if isinstance(n, IncomingInvitation) and n.event_type == "started" and n.accept_href
    ]

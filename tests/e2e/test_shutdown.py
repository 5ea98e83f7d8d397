"""Graceful shutdown on SIGTERM: the API drains, a worker finishes its job, the poller steps down.

Each role runs as a real process (``python -m bridge.cli <role>``) and gets a real SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from bridge.config.redis_text import text_map
from bridge.session.lease import PollerLease
from tests.e2e.conftest import ALICE, API_KEY, BOB, BOT, Bridge, MakeBridge, wait_for

pytestmark = pytest.mark.skipif(
    not Path("/proc/net/tcp").exists(), reason="reads socket state from Linux /proc"
)


def message_record(bridge: Bridge, message_id: str) -> dict[str, Any]:
    raw = bridge.redis().get(f"msg:{message_id}")
    assert raw is not None, f"no record for {message_id}"
    return dict(json.loads(raw))


def exit_code_within(proc: subprocess.Popen[bytes], seconds: float) -> tuple[int, float]:
    """Wait for ``proc`` to exit; return its exit code and how long it took."""
    started = time.monotonic()
    code = proc.wait(timeout=seconds)
    return code, time.monotonic() - started


# -- the API ------------------------------------------------------------------------------------


def listen_backlog(port: int) -> int | None:
    """Connections waiting in the accept queue of the socket listening on ``port`` (Linux)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
            return int(queues.split(":")[1], 16)  # rx_queue of a listener = its accept backlog
    return None


def open_slow_post(port: int, body: bytes, sent: int) -> socket.socket:
    """A POST /messages whose body stops after ``sent`` bytes, once a worker has accepted it."""
    head = (
        f"POST /messages HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n"
        f"Idempotency-Key: in-flight\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    slow = socket.create_connection(("127.0.0.1", port), timeout=10)
    slow.sendall(head + body[:sent])
    wait_for(lambda: listen_backlog(port) == 0, 10, "a gunicorn worker to accept the request")
    return slow


def read_all(sock: socket.socket) -> bytes:
    raw = b""
    try:
        while chunk := sock.recv(65536):
            raw += chunk
    except ConnectionResetError:
        pass
    sock.close()
    return raw


@dataclass
class Outcome:
    key: str
    body: dict[str, Any]
    status: int | None = None
    message_id: str | None = None
    error: Exception | None = None


@dataclass
class Clients:
    """Threads POSTing /messages back to back, each request with its own Idempotency-Key."""

    api_url: str
    threads: int = 4
    outcomes: list[Outcome] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _running: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for n in range(self.threads):
            thread = threading.Thread(target=self._loop, args=(n,), daemon=True)
            thread.start()
            self._running.append(thread)

    def join(self) -> None:
        self.stop.set()
        for thread in self._running:
            thread.join(timeout=15)
            assert not thread.is_alive()

    def accepted(self) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.status == 202]

    def _loop(self, n: int) -> None:
        session = requests.Session()
        count = 0
        while not self.stop.is_set():
            count += 1
            key = f"drain-{n}-{count}-{uuid.uuid4().hex[:8]}"
            outcome = Outcome(key, {"to": BOB, "text": key})
            try:
                response = session.post(
                    self.api_url + "/messages",
                    json=outcome.body,
                    headers={"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": key},
                    timeout=10,
                )
                outcome.status = response.status_code
                if response.status_code == 202:
                    outcome.message_id = response.json()["id"]
            except Exception as exc:  # every failure is an outcome, judged by the test
                outcome.error = exc
            with self._lock:
                self.outcomes.append(outcome)
            if outcome.error is not None:
                return  # the API is going away: one failure per client is enough evidence


def test_api_drains_in_flight_requests_and_exits_zero(make_bridge: MakeBridge) -> None:
    # No rate limit: the slow request holds no worker, so the clients run at full speed and
    # would use up the key's burst before the slow request's body arrives.
    bridge = make_bridge(
        start=False,
        env={
            "BRIDGE_API_WORKERS": "2",
            "BRIDGE_API_GRACEFUL_TIMEOUT_S": "10",
            "BRIDGE_RATE_LIMIT": "off",
        },
    )
    bridge.start_api()
    master = bridge.procs["api"][0]
    port = int(bridge.api_url.rsplit(":", 1)[1])

    # A request in flight: headers and part of the body sent, a worker is waiting for the rest.
    body = json.dumps({"to": ALICE, "text": "in flight at SIGTERM"}).encode()
    slow = open_slow_post(port, body, 10)

    clients = Clients(bridge.api_url)
    clients.start()
    try:
        wait_for(lambda: len(clients.accepted()) >= 20, 15, "the API to accept a steady load")
        log = next(bridge.workdir.glob("api-*.log"))
        master.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        wait_for(lambda: "Handling signal: term" in log.read_text(), 5, "gunicorn to see SIGTERM")

        slow.sendall(body[10:])  # the rest arrives after the master began shutting down
        raw = read_all(slow)
        code = master.wait(timeout=15)
        took = time.monotonic() - signalled
    finally:
        clients.join()

    head_part, _, payload = raw.partition(b"\r\n\r\n")
    assert head_part.startswith(b"HTTP/1.1 202"), raw
    in_flight = json.loads(payload)
    assert in_flight["text"] == "in flight at SIGTERM"
    assert code == 0, bridge.logs()
    # gevent workers end at the latest at the graceful timeout (kept-alive client connections
    # are waited for until then); allow for process exit on a busy machine.
    assert took < 12, f"gunicorn took {took:.1f}s, beyond its graceful timeout"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()

    # Every answer was complete: a 202 with its record stored, or a connection failure of a
    # request that was never processed (reset in the accept queue, or refused).
    failures = [o for o in clients.outcomes if o.error is not None]
    assert all(o.status in (202, None) for o in clients.outcomes), clients.outcomes
    for outcome in failures:
        assert isinstance(outcome.error, requests.ConnectionError), repr(outcome.error)
        assert not isinstance(outcome.error, requests.exceptions.ChunkedEncodingError)
    accepted = clients.accepted()
    stored = {key.decode() for key in bridge.redis().scan_iter("msg:msg_*") if b":" not in key[4:]}
    expected = {f"msg:{o.message_id}" for o in accepted} | {f"msg:{in_flight['id']}"}
    assert stored == expected

    # After a restart every accepted message is there, and no failed request had been processed:
    # repeating it with its Idempotency-Key is a first answer, not a replay.
    bridge.start_api()
    for outcome in accepted:
        assert bridge.message(str(outcome.message_id))["text"] == outcome.key
    for outcome in failures:
        again = bridge.post(outcome.body, headers={"Idempotency-Key": outcome.key})
        assert again.status_code == 202, again.text
        assert "Idempotency-Replayed" not in again.headers, outcome.key
    print(f"drained: {len(accepted)} accepted, {len(failures)} refused or reset before reading")


def test_api_cuts_off_a_request_still_running_at_the_graceful_timeout(
    make_bridge: MakeBridge,
) -> None:
    bridge = make_bridge(start=False, env={"BRIDGE_API_GRACEFUL_TIMEOUT_S": "2"})
    bridge.start_api()
    master = bridge.procs["api"][0]
    port = int(bridge.api_url.rsplit(":", 1)[1])
    body = json.dumps({"to": ALICE, "text": "never finished"}).encode()
    slow = open_slow_post(port, body, 10)

    master.send_signal(signal.SIGTERM)
    code, took = exit_code_within(master, 10)
    assert code == 0, bridge.logs()
    assert 1.5 <= took < 6, f"exited {took:.1f}s after SIGTERM with a 2s graceful timeout"
    assert read_all(slow) == b""  # cut off without an answer, and nothing was stored
    assert list(bridge.redis().scan_iter("msg:*")) == []


def test_api_refuses_a_bad_graceful_timeout() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    result = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "api"],
        env={
            **env,
            "BRIDGE_REDIS_URL": "redis://127.0.0.1:1/0",
            "BRIDGE_API_KEYS": API_KEY,
            "BRIDGE_API_GRACEFUL_TIMEOUT_S": "soon",
        },
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 78
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "BRIDGE_API_GRACEFUL_TIMEOUT_S" in lines[0]


# -- the worker ---------------------------------------------------------------------------------


def test_worker_finishes_its_job_on_sigterm_and_takes_no_new_one(make_bridge: MakeBridge) -> None:
    # One job runner: a second one would take the second message at once (several runners
    # stopping after their jobs: ``test_job_runners.py``).
    bridge = make_bridge(env={"BRIDGE_WORKER_RUNNERS": "1"})
    bridge.sim_call("DELETE", "/_sim/requests")
    bridge.sim_call(
        "POST", "/_sim/faults", {"match": {"rel": "startMessaging"}, "delay_ms": 2500, "times": 1}
    )
    first = bridge.send(ALICE, "finished after SIGTERM")
    wait_for(
        lambda: bridge.request_counts().get("startMessaging", 0) == 1,
        10,
        "the worker's startMessaging to reach UCWA",
        bridge.logs,
    )
    second = bridge.send(BOB, "waits for the next worker")  # queued behind the running job

    worker = bridge.procs["worker"][0]
    worker.send_signal(signal.SIGTERM)
    code, took = exit_code_within(worker, 15)
    assert code == 0, bridge.logs()

    # The job ran to its end: the POST's answer was recorded before the worker exited...
    done = message_record(bridge, first)
    assert done["attempts"] == 1 and not done["step"].startswith("posting"), done
    # ...and no new job was taken after SIGTERM.
    waiting = message_record(bridge, second)
    assert waiting["status"] == "queued" and waiting["attempts"] == 0, waiting

    assert bridge.wait_final(first)[first]["status"] == "delivered"
    assert bridge.texts(ALICE) == ["finished after SIGTERM"]
    assert bridge.request_counts().get("startMessaging") == 1
    assert bridge.texts(BOB) == []

    bridge.start_worker()
    assert bridge.wait_final(second)[second]["status"] == "delivered"
    assert bridge.texts(BOB) == ["waits for the next worker"]
    assert bridge.request_counts().get("startMessaging") == 2
    print(f"worker exited {took:.1f}s after SIGTERM")


def test_second_signal_stops_the_worker_cold_and_the_message_is_still_sent_once(
    make_bridge: MakeBridge,
) -> None:
    # The recovery run waits this long for the events of the cut-off POST before resending it:
    # longer than the POST's delay, as in production (5 s grace, UCWA answers in well under 1 s).
    bridge = make_bridge(env={"BRIDGE_AMBIGUITY_GRACE_S": "8"})
    bridge.sim_call("DELETE", "/_sim/requests")
    bridge.sim_call(
        "POST", "/_sim/faults", {"match": {"rel": "startMessaging"}, "delay_ms": 4000, "times": 1}
    )
    message_id = bridge.send(ALICE, "cut off mid-POST")
    wait_for(
        lambda: bridge.request_counts().get("startMessaging", 0) == 1,
        10,
        "the worker's startMessaging to reach UCWA",
        bridge.logs,
    )
    worker = bridge.procs["worker"][0]
    worker.send_signal(signal.SIGTERM)  # warm: would wait for the job
    time.sleep(1.2)  # RQ ignores a second signal within 1 s of the first (duplicate delivery)
    worker.send_signal(signal.SIGINT)  # cold: abandon the job now
    code, took = exit_code_within(worker, 5)
    assert code == 0, bridge.logs()
    # It did not wait for the POST's answer (due 4 s after the request reached UCWA).
    assert message_record(bridge, message_id)["step"] == "posting_cold"

    bridge.start_worker()
    assert bridge.wait_final(message_id)[message_id]["status"] == "delivered"
    assert bridge.texts(ALICE) == ["cut off mid-POST"]
    assert bridge.request_counts().get("startMessaging") == 1
    print(f"cold shutdown {took:.2f}s after the second signal")


# -- the poller ---------------------------------------------------------------------------------


def has_socket(pid: int) -> bool:
    """True once the process opened a socket (a standby poller: its Redis connection)."""
    fds = Path(f"/proc/{pid}/fd")
    try:
        return any(os.readlink(fd).startswith("socket:") for fd in fds.iterdir())
    except OSError:
        return False


def bot_applications(bridge: Bridge) -> list[str]:
    users = bridge.sim_call("GET", "/_sim/users")
    return [app["href"] for user in users if user["sip"] == BOT for app in user["applications"]]


def test_poller_releases_its_lease_on_sigterm_and_keeps_the_application(
    make_bridge: MakeBridge,
) -> None:
    lease_s = 10.0
    bridge = make_bridge(env={"BRIDGE_POLLER_LEASE_S": str(int(lease_s))})
    client = bridge.redis()
    active = bridge.procs["poller"][0]
    standby = bridge.start_poller(wait=False)
    wait_for(lambda: has_socket(standby.pid), 10, "the standby poller to reach Redis")
    session = text_map(client.hgetall(f"session:{BOT}"))
    lease = PollerLease.current(client, BOT)
    assert lease is not None and lease.fence == int(session["fence"])
    apps = bot_applications(bridge)
    assert len(apps) == 1 and session["application_href"].endswith(apps[0])
    bridge.sim_call("DELETE", "/_sim/requests")

    active.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    message_id = bridge.send(ALICE, "sent during the handover")
    code, took = exit_code_within(active, 10)
    assert code == 0, bridge.logs()
    assert took < 3, f"the active poller took {took:.1f}s to exit"
    after = PollerLease.current(client, BOT)
    assert after is None or after.fence > lease.fence, after  # released, not left to expire

    def standby_ready() -> bool:
        now = text_map(client.hgetall(f"session:{BOT}"))
        return now.get("state") == "ready" and int(now.get("fence") or 0) > lease.fence

    wait_for(standby_ready, lease_s, "the standby to take over", bridge.logs)
    takeover = time.monotonic() - signalled
    assert takeover < lease_s / 3, f"takeover took {takeover:.1f}s (lease TTL {lease_s}s)"

    now = text_map(client.hgetall(f"session:{BOT}"))
    assert now["application_href"] == session["application_href"]
    assert now["generation"] == session["generation"]
    deletes = [
        r for r in bridge.ucwa_requests() if r["method"] == "DELETE" and r["kind"] == "application"
    ]
    assert deletes == []
    assert bot_applications(bridge) == apps

    assert bridge.wait_final(message_id)[message_id]["status"] == "delivered"
    assert bridge.texts(ALICE) == ["sent during the handover"]
    assert bridge.request_counts().get("startMessaging") == 1
    assert standby.poll() is None
    print(f"poller exited after {took:.2f}s; standby ready {takeover:.2f}s after SIGTERM")


def test_standby_stopped_while_standing_by_exits_at_once_and_leaves_the_lease_alone(
    make_bridge: MakeBridge,
) -> None:
    bridge = make_bridge(env={"BRIDGE_POLLER_LEASE_S": "10"})
    client = bridge.redis()
    lease = PollerLease.current(client, BOT)
    assert lease is not None
    standby = bridge.start_poller(wait=False)
    wait_for(lambda: has_socket(standby.pid), 10, "the standby poller to reach Redis")

    standby.send_signal(signal.SIGTERM)
    code, took = exit_code_within(standby, 5)
    assert code == 0, bridge.logs()
    assert took < 2, f"the standby took {took:.1f}s to exit"
    still = PollerLease.current(client, BOT)
    assert still is not None and (still.holder, still.fence) == (lease.holder, lease.fence)
    assert bridge.session_state() == "ready"
    message_id = bridge.send(ALICE, "the active poller carries on")
    assert bridge.wait_final(message_id)[message_id]["status"] == "delivered"


def test_a_poller_stopped_after_losing_its_lease_leaves_the_new_session_alone(
    make_bridge: MakeBridge,
) -> None:
    bridge = make_bridge()  # lease TTL 2 s
    client = bridge.redis()
    active = bridge.procs["poller"][0]
    standby = bridge.start_poller(wait=False)
    wait_for(lambda: has_socket(standby.pid), 10, "the standby poller to reach Redis")
    lease = PollerLease.current(client, BOT)
    assert lease is not None

    active.send_signal(signal.SIGSTOP)  # frozen past its lease: the standby takes over
    try:

        def taken_over() -> bool:
            now = text_map(client.hgetall(f"session:{BOT}"))
            return now.get("state") == "ready" and int(now.get("fence") or 0) > lease.fence

        wait_for(taken_over, 15, "the standby to take over", bridge.logs)
        active.send_signal(signal.SIGTERM)  # delivered the moment it runs again
    finally:
        active.send_signal(signal.SIGCONT)
    code, _ = exit_code_within(active, 10)
    assert code == 0, bridge.logs()

    assert bridge.session_state() == "ready"  # not "stopped": that session is not the old one's
    message_id = bridge.send(ALICE, "after a stale poller stopped")
    assert bridge.wait_final(message_id, timeout=15)[message_id]["status"] == "delivered"
    assert bridge.texts(ALICE) == ["after a stale poller stopped"]

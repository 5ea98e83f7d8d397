"""End-to-end fixtures: the simulator, gunicorn API, poller and worker processes on real Redis.

Every bridge role runs as a real subprocess with BRIDGE_* settings, exactly as in production.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from standardwebhooks import Webhook

from bridge.demo import listen
from bridge.webhooks.payloads import validate_event
from tests.rewriting_proxy import RewritingProxy
from tests.webhooks.receiver import WebhookReceiver
from ucwasim import SimConfig, Simulator, SimUser

BOT = "sip:bot@contoso.com"
ALICE = "sip:alice@contoso.com"
BOB = "sip:bob@contoso.com"
BOT_PASSWORD = "Bot-Passw0rd-e2e"
ALERTS = "sip:alerts@contoso.com"  # a second account the bridge can speak as
ALERTS_PASSWORD = "Alerts-Passw0rd-e2e"
API_KEY = "e2e-test-key-0123456789abcdef"
FINAL = ("delivered", "failed", "expired", "cancelled")


def sim_users() -> list[SimUser]:
    return [
        SimUser(BOT, BOT_PASSWORD, name="Bridge Bot"),
        SimUser(ALERTS, ALERTS_PASSWORD, name="Alerts"),
        SimUser("sip:alice@contoso.com", "pw", name="Alice Adams"),
        SimUser("sip:bob@contoso.com", "pw", name="Bob Brown"),
        SimUser("sip:echo@contoso.com", "pw", behaviour="echo"),
        SimUser("sip:decliner@contoso.com", "pw", behaviour="decline"),
        SimUser("sip:silent@contoso.com", "pw", behaviour="no-answer"),
        SimUser("sip:away@contoso.com", "pw", behaviour="offline"),
    ]


@dataclass
class Bridge:
    """Handles on a running bridge and its simulator, with helpers tests read like prose."""

    redis_url: str
    sim: Simulator
    workdir: Path
    env: dict[str, str]
    api_url: str = ""
    procs: dict[str, list[subprocess.Popen[bytes]]] = field(default_factory=dict)
    log_paths: dict[int, Path] = field(default_factory=dict)  # by pid

    # -- processes ------------------------------------------------------------------------------
    def spawn(
        self,
        role: str,
        *args: str,
        env: dict[str, str] | None = None,
        keep_fds: tuple[int, ...] = (),
    ) -> subprocess.Popen[bytes]:
        # Numbered by all the processes this bridge ever started: a role restarted after its
        # process exited gets a log of its own instead of truncating a running one's.
        count = len(list(self.workdir.glob("*-*.log")))
        path = self.workdir / f"{role}-{count}.log"
        log = open(path, "xb")  # noqa: SIM115 - lives with proc
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", role, *args],
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=keep_fds,
        )
        self.procs.setdefault(role, []).append(proc)
        self.log_paths[proc.pid] = path
        return proc

    def exit_report(self, proc: subprocess.Popen[bytes], lines: int = 12) -> str:
        """How a process of this bridge ended: its exit code and the last lines it logged."""
        path = self.log_paths.get(proc.pid)
        tail = path.read_text(errors="replace").splitlines()[-lines:] if path else []
        name = path.name if path else str(proc.pid)
        return "\n".join([f"{name} exited with {proc.returncode}:", *tail])

    def start_api(self) -> None:
        # Bound here and handed over: a port only looked at could be another's by the time
        # gunicorn binds it, and a test would then talk to another test's API.
        with listen(0, "API") as sock:
            self.api_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
            fd = sock.fileno()
            self.spawn("api", "--bind", f"fd://{fd}", keep_fds=(fd,))
        wait_for(lambda: _up(self.api_url + "/healthz"), 20, "the API to answer")

    def start_poller(
        self, wait: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        proc = self.spawn("poller", env=env)
        if wait:
            wait_for(lambda: self.session_state() == "ready", 20, "the UCWA session")
        return proc

    def start_worker(self, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        return self.spawn("worker", env=env)

    def stop_all(self) -> None:
        for procs in self.procs.values():
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
        for procs in self.procs.values():
            for proc in procs:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)

    def logs(self) -> str:
        parts = []
        for path in sorted(self.workdir.glob("*.log")):
            parts.append(f"----- {path.name}\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)

    def jobs(self) -> str:
        """RQ's state, for a test that timed out waiting for a message: what is queued, started
        or scheduled (and how far past due), and who holds the queues' scheduler locks."""
        client = redis.Redis.from_url(self.redis_url, socket_timeout=5)
        now = time.time()
        lines = []
        try:
            for key in sorted(k.decode() for k in client.scan_iter("rq:*")):
                kind = client.type(key).decode()
                if kind == "list":
                    items = [v.decode() for v in client.lrange(key, 0, 9)]
                    lines.append(f"{key} (list {client.llen(key)}): {items}")
                elif kind == "zset":
                    scored = client.zrange(key, 0, 9, withscores=True)
                    items = [f"{m.decode()}@{score - now:+.1f}s" for m, score in scored]
                    lines.append(f"{key} (zset {client.zcard(key)}): {items}")
                elif kind == "string" and key.startswith("rq:scheduler-lock:"):
                    ttl = client.ttl(key)
                    lines.append(f"{key} = {client.get(key)!r} (ttl {ttl}s)")
        finally:
            client.close()
        return "\n".join(lines)

    def full_logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("*.log")))

    # -- the API --------------------------------------------------------------------------------
    def api(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> requests.Response:
        """One authorised API call; the caller checks the answer."""
        merged = {"Authorization": f"Bearer {API_KEY}", **(headers or {})}
        return requests.request(method, self.api_url + path, json=body, headers=merged, timeout=10)

    def api_get(self, path: str) -> Any:
        response = self.api("GET", path)
        assert response.status_code == 200, response.text
        return response.json()

    def post(
        self, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> requests.Response:
        return self.api("POST", "/messages", body, headers)

    def send(self, to: str, text: str | None = None, **extra: Any) -> str:
        body: dict[str, Any] = {"to": to, **extra}
        if text is not None:
            body["text"] = text
        response = self.post(body)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def message(self, message_id: str) -> dict[str, Any]:
        return dict(self.api_get(f"/messages/{message_id}"))

    def ready(self) -> int:
        """The /readyz status code, 0 when the API does not answer."""
        try:
            return requests.get(self.api_url + "/readyz", timeout=5).status_code
        except requests.RequestException:
            return 0

    def wait_final(self, *ids: str, timeout: float = 30) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}

        def done() -> bool:
            for message_id in ids:
                found[message_id] = self.message(message_id)
            return all(m["status"] in FINAL for m in found.values())

        wait_for(done, timeout, f"messages {ids} to end", self.logs)
        return found

    # -- Redis and the simulator ----------------------------------------------------------------
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def session_state(self) -> str | None:
        value = self.redis().hget(f"session:{BOT}", "state")
        return value.decode() if value else None

    def sim_call(self, method: str, path: str, body: Any = None) -> Any:
        response = requests.request(method, self.sim.base_url + path, json=body, timeout=10)
        assert response.status_code < 400, response.text
        return response.json() if response.content else None

    def inbox(self, sip: str) -> list[dict[str, Any]]:
        return list(self.sim_call("GET", f"/_sim/users/{sip}/messages"))

    def texts(self, sip: str) -> list[str]:
        """The texts ``sip`` received, in order."""
        return [m["text"] for m in self.inbox(sip)]

    def ucwa_requests(self) -> list[dict[str, Any]]:
        return list(self.sim_call("GET", "/_sim/requests")["requests"])

    def request_counts(self) -> dict[str, int]:
        return dict(self.sim_call("GET", "/_sim/requests")["counts"])


MakeBridge = Callable[..., Bridge]


def wait_for(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    diagnostics: Callable[[], str] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    extra = f"\n{diagnostics()}" if diagnostics else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")


def _up(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


BRIDGE_ENV = {
    "BRIDGE_API_KEYS": API_KEY,
    "BRIDGE_UCWA_USERNAME": BOT,
    "BRIDGE_UCWA_PASSWORD": BOT_PASSWORD,
    "BRIDGE_API_WORKERS": "1",
    "BRIDGE_INVITATION_TIMEOUT_S": "5",
    "BRIDGE_MESSAGE_TIMEOUT_S": "3",
    "BRIDGE_AMBIGUITY_GRACE_S": "1",
    "BRIDGE_BACKOFF_BASE_S": "0.2",
    "BRIDGE_BACKOFF_CAP_S": "2",
    "BRIDGE_KEEPALIVE_S": "2",
    "BRIDGE_SWEEP_S": "1",
    "BRIDGE_POLLER_LEASE_S": "2",
    "BRIDGE_EVENT_TIMEOUT_S": "180",
    "BRIDGE_LOG_LEVEL": "INFO",
}


SECRET = "whsec_" + base64.b64encode(b"e2e-webhook-secret-0123456789ab").decode()


@pytest.fixture()
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


def webhook_env(receiver: WebhookReceiver, **extra: str) -> dict[str, str]:
    return {
        "BRIDGE_WEBHOOK_URL": receiver.url(),
        "BRIDGE_WEBHOOK_SECRET": SECRET,
        "BRIDGE_WEBHOOK_ALLOW_PRIVATE": "true",
        "BRIDGE_WEBHOOK_SCHEDULE_S": "0,1,1,1,1",
        **extra,
    }


def events(receiver: WebhookReceiver, kind: str | None = None) -> list[dict[str, Any]]:
    """Verified event bodies, one per webhook-id (retries of one event count once)."""
    seen: dict[str, dict[str, Any]] = {}
    for request in receiver.received:
        if not 200 <= request.status < 300:
            continue
        body = Webhook(SECRET).verify(request.body, request.headers)
        validate_event(body)  # every event any e2e test sees has the published shape
        seen.setdefault(request.headers["webhook-id"], body)
    found = list(seen.values())
    return [e for e in found if kind is None or e["type"] == kind]


@pytest.fixture()
def make_bridge(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> Iterator[Callable[..., Bridge]]:
    """Build a bridge against a fresh simulator; ``sim`` overrides SimConfig fields."""
    made: list[Bridge] = []
    proxies: list[RewritingProxy] = []

    def build(
        start: bool = True,
        env: dict[str, str] | None = None,
        own_redis: str = "",
        proxy: RewritingProxy | None = None,
        **sim: Any,
    ) -> Bridge:
        """``own_redis``: a Redis URL to use instead of the session's (e.g. one a test restarts);
        ``proxy``: a started RewritingProxy that every UCWA request of the bridge goes through."""
        config = SimConfig(users=sim_users(), **{"time_scale": 0.05, **sim})
        simulator = Simulator(config).start(public_url=proxy.url if proxy else None)
        if proxy is not None:
            proxy.upstream = f"http://127.0.0.1:{simulator.port}"
            proxies.append(proxy)
        environ = {
            **os.environ,
            **BRIDGE_ENV,
            "BRIDGE_REDIS_URL": own_redis or redis_url,
            "BRIDGE_UCWA_DISCOVERY_URL": simulator.discovery_url,
            **(env or {}),
        }
        bridge = Bridge(own_redis or redis_url, simulator, tmp_path, environ)
        made.append(bridge)
        if start:
            bridge.start_api()
            bridge.start_poller()
            bridge.start_worker()
        return bridge

    yield build
    for bridge in made:
        bridge.stop_all()
        bridge.sim.stop()
    for proxy in proxies:
        proxy.stop()
    for workdir in {bridge.workdir for bridge in made}:
        assert_json_logs(workdir)


LOG_FIELDS = ("time", "level", "logger", "message", "role")


def assert_json_logs(workdir: Path) -> None:
    """Every line every role printed is one JSON object with the fields of a log line."""
    for path in sorted(workdir.glob("*-*.log")):
        if path.name.split("-", 1)[0] not in ("api", "worker", "poller", "demo"):
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            missing = [f for f in LOG_FIELDS if not isinstance(entry, dict) or f not in entry]
            assert not missing, f"{path.name}:{number} is not a JSON log line ({missing}): {line}"

"""``ucwa-bridge demo``: the whole bridge on one machine against the UCWA simulator, no setup.

Starts a private Redis, the simulator, the api, a worker, the poller and a webhook receiver.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

import redis
import requests

BOT = "sip:bot@contoso.com"
ALERTS = "sip:alerts@contoso.com"  # the demo's second account
ECHO = "sip:echo@contoso.com"
# (SIP URI, simulated behaviour); the bot is the account the bridge signs in as.
PEOPLE = (
    ("sip:alice@contoso.com", "accept"),
    ("sip:bob@contoso.com", "accept"),
    (ECHO, "echo"),
    ("sip:carol@contoso.com", "decline"),
    ("sip:dave@contoso.com", "offline"),
)
ROLES = ("api", "worker", "poller")
STOP_TIMEOUT_S = 25.0
READY_TIMEOUT_S = 90.0
# The roles that serve /metrics of their own, and what each shows.
METRICS_ROLES = {
    "worker": "sends it ended, UCWA requests, webhook attempts",
    "poller": "sends by outcome, delivery latency, quarantined events",
}
# The first line ``ucwasim serve`` prints once it listens.
SIM_BANNER = re.compile(r"ucwasim serving (\S+); discovery URL (\S+)")

_print_lock = threading.Lock()


def say(text: str = "") -> None:
    with _print_lock:
        print(text, flush=True)


class DemoError(RuntimeError):
    """Start-up failed; the message says what, in one line."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from bridge.config.environment import variables_help

    parser = argparse.ArgumentParser(
        prog="ucwa-bridge demo",
        description="Run the bridge, a UCWA simulator and a webhook receiver on this machine. "
        "The demo configures the processes it starts itself: of the BRIDGE_* variables, it "
        "reads only those below.",
        epilog=variables_help("demo"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, default=8080, help="API port (default 8080)")
    parser.add_argument("--sim-port", type=int, default=0, help="simulator port (default: any)")
    parser.add_argument("--no-receiver", action="store_true", help="configure no webhooks")
    parser.add_argument(
        "--webhook-url",
        help="send webhooks to your own receiver instead of the demo's (private addresses allowed)",
    )
    parser.add_argument(
        "--webhook-secret",
        help="the whsec_ secret your receiver verifies with (default: a new one, printed)",
    )
    parser.add_argument(
        "--time-scale", type=float, default=1.0, help="simulator time scale (default 1.0)"
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the log directory")
    args = parser.parse_args(argv)
    if args.time_scale <= 0:
        parser.error("--time-scale must be positive")
    if args.webhook_secret and not args.webhook_url:
        parser.error("--webhook-secret goes with --webhook-url")
    if args.webhook_url and args.no_receiver:
        parser.error("--webhook-url and --no-receiver exclude each other")
    if args.webhook_url and not args.webhook_url.startswith(("http://", "https://")):
        parser.error("--webhook-url must be an http:// or https:// URL")
    if args.webhook_secret:
        from bridge.webhooks.endpoints import WebhookEndpoint
        from bridge.webhooks.errors import WebhookConfigError

        try:
            WebhookEndpoint("demo", args.webhook_url, [args.webhook_secret])
        except WebhookConfigError as exc:
            parser.error(f"--webhook-secret: {exc}")
    return args


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def listen(wanted: int, what: str) -> socket.socket:
    """A socket listening on ``wanted`` if that is free (0 means any), else on a free port,
    saying so. The demo binds it and hands it to the child that serves on it: a port only
    looked at here could be taken by another process before the child bound it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
    try:
        try:
            sock.bind(("127.0.0.1", wanted))
        except OSError:
            sock.bind(("127.0.0.1", 0))
            say(f"port {wanted} is busy; the {what} uses port {sock.getsockname()[1]} instead")
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


def metrics_port_in(log_text: str) -> int | None:
    """The port of the last ``serving /metrics`` line in a role's JSON log, if any."""
    from bridge.observability.metrics import METRICS_LINE

    found = None
    for line in log_text.splitlines():
        if METRICS_LINE not in line:
            continue
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("message") == METRICS_LINE and isinstance(record.get("port"), int):
                found = record["port"]
    return found


class WebhookReceiver:
    """A tiny HTTP server that verifies Standard Webhooks signatures and prints each event."""

    def __init__(self, secret: str, show: Callable[[str], None] = say) -> None:
        from standardwebhooks.webhooks import Webhook

        self.verifier = Webhook(secret)
        self.show = show
        self.events: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = receiver.handle(body, {k: v for k, v in self.headers.items()})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/webhook"

    def start(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def handle(self, body: bytes, headers: dict[str, str]) -> int:
        from standardwebhooks.webhooks import WebhookVerificationError

        try:
            event = self.verifier.verify(body, headers)
        except (WebhookVerificationError, ValueError):
            self.show("[webhook] rejected a request with a bad signature")
            return 401
        self.events.append(event)
        self.show(describe_event(event))
        return 204

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def describe_event(event: dict[str, Any]) -> str:
    kind = str(event.get("type"))
    data = event.get("data") or {}
    if kind == "message.received":
        sender = data.get("from") or {}
        uri = sender.get("uri") if isinstance(sender, dict) else sender
        text = data.get("text") if data.get("text") is not None else data.get("html")
        return f"[webhook] {kind} from {uri or '?'}: {json.dumps(text, ensure_ascii=False)}"
    detail = data.get("message_id") or data.get("id") or ""
    error = data.get("error") or {}
    code = f" ({error.get('code')})" if isinstance(error, dict) and error.get("code") else ""
    broadcast = f" [broadcast {data['broadcast']}]" if data.get("broadcast") else ""
    return f"[webhook] {kind} {detail}{code}{broadcast}".rstrip()


class Demo:
    """Owns everything the demo started; ``shutdown`` undoes it in reverse, whatever happened."""

    def __init__(self, args: argparse.Namespace, stop: threading.Event) -> None:
        self.args = args
        self.stop = stop
        self.workdir = Path(tempfile.mkdtemp(prefix="ucwa-bridge-demo-"))
        self.logs = self.workdir / "logs"
        self.logs.mkdir()
        self.api_key = "demo_" + secrets.token_urlsafe(24)
        self.webhook_secret = args.webhook_secret or (
            "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        )
        self.bot_password = secrets.token_urlsafe(18)
        self.alerts_password = secrets.token_urlsafe(18)
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.redis: Any = None
        self.sim: subprocess.Popen[bytes] | None = None
        self.sim_url = ""
        self.discovery_url = ""
        self.receiver: WebhookReceiver | None = None
        self.api_url = ""
        # Worker and poller serve their own /metrics on a port each chooses (BRIDGE_METRICS_PORT
        # 0), read from its log once it is ready.
        self.metrics_ports: dict[str, int] = {}

    # -- start-up -------------------------------------------------------------------------------
    def start(self) -> None:
        from bridge.config.embedded_redis import EmbeddedRedis

        # Unless a free port was asked for, the simulator binds one of its own choosing and names
        # it in its banner: a port picked here can be taken by another process before it binds.
        wanted = self.args.sim_port
        sim_port = wanted if wanted and port_free(wanted) else 0
        if wanted and not sim_port:
            say(f"port {wanted} is busy; the simulator uses another")
        self.redis = EmbeddedRedis(data_dir=str(self.workdir / "redis"), appendonly=False)
        Path(self.redis.data_dir).mkdir()
        self.redis.start()
        self._start_simulator(sim_port)
        if not self.args.no_receiver and not self.args.webhook_url:
            self.receiver = WebhookReceiver(self.webhook_secret).start()
        say("ucwa-bridge demo")
        say(f"  redis:      {self.redis.url} (private, removed on exit)")
        say(f"  simulator:  {self.sim_url} (accounts bot = {BOT}, alerts = {ALERTS})")
        if self.receiver is not None:
            say(f"  webhooks:   {self.receiver.url} (signatures verified, events shown below)")
        say(f"  logs:       {self.logs}")
        with listen(self.args.port, "API") as api_socket:
            self.api_url = f"http://127.0.0.1:{api_socket.getsockname()[1]}"
            fd = api_socket.fileno()
            self._spawn("api", ["api", "--bind", f"fd://{fd}"], keep_fds=(fd,))
        self._spawn("worker", ["worker"])
        self._spawn("poller", ["poller"])
        self._wait_ready()
        for role in METRICS_ROLES:
            log_text = (self.logs / f"{role}.log").read_text(encoding="utf-8", errors="replace")
            port = metrics_port_in(log_text)
            if port is not None:
                self.metrics_ports[role] = port

    def _start_simulator(self, port: int) -> None:
        """The simulator runs as a process of its own (``bridge`` never imports ``ucwasim``), as a
        real server would; its users and their passwords go in a private file, not on its argv."""
        users = [
            {"sip": BOT, "password": self.bot_password},
            {"sip": ALERTS, "password": self.alerts_password},
        ]
        users += [
            {"sip": sip, "password": secrets.token_urlsafe(12), "behaviour": b} for sip, b in PEOPLE
        ]
        config = self.workdir / "ucwasim.json"
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"users": users, "time_scale": self.args.time_scale}, out)
        log_path = self.logs / "ucwasim.log"
        argv = ["serve", "--host", "127.0.0.1", "--port", str(port), "--config", str(config)]
        with open(log_path, "ab") as log:
            self.sim = subprocess.Popen(
                [sys.executable, "-m", "ucwasim", *argv],
                env={k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
                | {"PYTHONUNBUFFERED": "1"},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self.stop.is_set():
            banner = SIM_BANNER.search(log_path.read_text(encoding="utf-8", errors="replace"))
            if banner:
                self.sim_url, self.discovery_url = banner.group(1), banner.group(2)
                return
            code = self.sim.poll()
            if code is not None:
                raise DemoError(f"the simulator exited with code {code}\n{self.tail('ucwasim')}")
            if time.monotonic() > deadline:
                raise DemoError("timed out waiting for the simulator")
            self.stop.wait(0.05)

    def environment(self, role: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("BRIDGE_") and k != "PROMETHEUS_MULTIPROC_DIR"
        }
        env.update(
            PYTHONUNBUFFERED="1",
            BRIDGE_LOG_LEVEL="INFO",
            BRIDGE_REDIS_URL=self.redis.url,
            BRIDGE_UCWA_DISCOVERY_URL=self.discovery_url,
        )
        # Two accounts: the bot (the default) and alerts. Only the worker and the poller sign
        # in, so only they are given the passwords.
        accounts: list[dict[str, Any]] = [
            {"id": "bot", "username": BOT, "default": True},
            {"id": "alerts", "username": ALERTS},
        ]
        if role != "api":
            accounts[0]["password"] = self.bot_password
            accounts[1]["password"] = self.alerts_password
        env["BRIDGE_ACCOUNTS"] = json.dumps(accounts)
        if role == "api":
            env["BRIDGE_API_KEYS"] = self.api_key
            env["PROMETHEUS_MULTIPROC_DIR"] = str(self.workdir / "metrics")
        elif role in METRICS_ROLES:
            env["BRIDGE_METRICS_PORT"] = "0"
        webhook_url = self.args.webhook_url or (self.receiver.url if self.receiver else None)
        if webhook_url:
            env.update(
                BRIDGE_WEBHOOK_URL=webhook_url,
                BRIDGE_WEBHOOK_SECRET=self.webhook_secret,
                BRIDGE_WEBHOOK_ALLOW_PRIVATE="true",
            )
        return env

    def _spawn(self, role: str, args: list[str], keep_fds: Sequence[int] = ()) -> None:
        log = open(self.logs / f"{role}.log", "ab")  # noqa: SIM115 - the child owns it
        try:
            self.children[role] = subprocess.Popen(
                [sys.executable, "-m", "bridge.cli", *args],
                env=self.environment(role),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the demo only; it stops them in order
                pass_fds=keep_fds,
            )
        finally:
            log.close()

    def _wait_ready(self) -> None:
        from bridge.observability.health import api_readiness, worker_health

        client = redis.Redis.from_url(self.redis.url)
        deadline = time.monotonic() + READY_TIMEOUT_S * max(1.0, self.args.time_scale)
        waiting_for = ["the API"]
        try:
            while not self.stop.is_set():
                self.check_children()
                waiting_for = []
                if not self._api_up():
                    waiting_for.append("the API")
                ok, _ = worker_health(client)
                if not ok:
                    waiting_for.append("the worker")
                ok, reasons = api_readiness(client, [BOT, ALERTS])
                if not ok:
                    waiting_for.append("the poller (" + "; ".join(reasons) + ")")
                if not waiting_for:
                    return
                if time.monotonic() > deadline:
                    raise DemoError("timed out waiting for " + ", ".join(waiting_for))
                self.stop.wait(0.25)
        finally:
            client.close()

    def _api_up(self) -> bool:
        try:
            return requests.get(f"{self.api_url}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def announce(self) -> None:
        body = json.dumps({"to": ECHO, "text": "Hello from ucwa-bridge"})
        say("")
        say(f"API: {self.api_url}")
        say(f"API key: {self.api_key}")
        if self.args.webhook_url:
            say(f"Webhooks go to {self.args.webhook_url}, signed with {self.webhook_secret}")
        elif self.receiver is not None:
            say(f"Webhook secret (the demo's receiver verifies with it): {self.webhook_secret}")
        say("")
        say("In another shell:")
        say(f"  export BRIDGE={self.api_url}")
        say(f"  export API_KEY={self.api_key}")
        auth = '-H "Authorization: Bearer $API_KEY"'
        say(f"Send a message ({ECHO} answers with an echo):")
        say(
            f"  curl -s -X POST $BRIDGE/messages {auth} "
            f"-H \"Content-Type: application/json\" -d '{body}'"
        )
        alert = json.dumps({"to": ECHO, "text": "Disk full on db-1", "from": "alerts"})
        say("Send one from the second account, alerts (the first, bot, is the default):")
        say(
            f"  curl -s -X POST $BRIDGE/messages {auth} "
            f"-H \"Content-Type: application/json\" -d '{alert}'"
        )
        say("Read its status (the id is in the answer):")
        say(f"  curl -s $BRIDGE/messages/MESSAGE_ID {auth}")
        say("Webhook deliveries (endpoint id default):")
        say(f"  curl -s $BRIDGE/webhooks/deliveries {auth}")
        say("Metrics (Prometheus text):")
        say(f"  {self.api_url}/metrics  (API requests, queue depth, poller lag, session, Redis)")
        for role, what in METRICS_ROLES.items():
            if role in self.metrics_ports:
                say(f"  http://127.0.0.1:{self.metrics_ports[role]}/metrics  ({role}: {what})")
        say("Other recipients: " + ", ".join(f"{sip} ({b})" for sip, b in PEOPLE if sip != ECHO))
        if self.receiver is None and not self.args.webhook_url:
            say("No webhook receiver (--no-receiver): inbound replies are not shown.")
        say("")
        say("ready (press Ctrl-C to stop)")

    # -- running --------------------------------------------------------------------------------
    def check_children(self) -> None:
        if self.sim is not None and self.sim.poll() is not None:
            raise DemoError(f"the simulator exited with code {self.sim.returncode}")
        for role, child in self.children.items():
            code = child.poll()
            if code is not None:
                raise DemoError(f"the {role} exited with code {code}\n{self.tail(role)}")

    def tail(self, role: str, lines: int = 15) -> str:
        path = self.logs / f"{role}.log"
        try:
            text = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(f"  {role}| {line}" for line in text[-lines:])

    # -- shutdown -------------------------------------------------------------------------------
    def shutdown(self) -> None:
        for child in self.children.values():
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for role, child in self.children.items():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                say(f"the {role} did not stop in {STOP_TIMEOUT_S:.0f}s; killing it")
            # Also reaps what the role started (gunicorn workers, the RQ scheduler).
            _kill_group(child.pid)
            if child.poll() is None:
                child.wait(timeout=10)
        if self.receiver is not None:
            self.receiver.stop()
        if self.sim is not None:
            self.sim.terminate()
            try:
                self.sim.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _kill_group(self.sim.pid)
                self.sim.wait(timeout=10)
        if self.redis is not None:
            self.redis.stop()
        if self.args.keep_logs:
            say(f"logs kept in {self.logs}")
            shutil.rmtree(self.workdir / "redis", ignore_errors=True)
            shutil.rmtree(self.workdir / "metrics", ignore_errors=True)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def run_demo(argv: list[str] | None = None) -> int:
    """Run until SIGINT or SIGTERM; 0 after a clean stop, 1 if something failed."""
    args = parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    demo = Demo(args, stop)
    code = 0
    try:
        demo.start()
        if not stop.is_set():
            demo.announce()
        while not stop.wait(0.5):
            demo.check_children()
    except DemoError as exc:
        say(f"demo: {exc}")
        code = 1
    except Exception as exc:  # e.g. no redis-server, a port taken meanwhile
        say(f"demo: could not start: {type(exc).__name__}: {exc}")
        code = 1
    finally:
        say("stopping…")
        demo.shutdown()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        say("stopped")
    return code


if __name__ == "__main__":
    raise SystemExit(run_demo())

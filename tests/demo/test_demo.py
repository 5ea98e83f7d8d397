"""The demo as a user runs it: a real subprocess, a message to the echo user, then Ctrl-C.

The tests in this module share one demo run and must run in file order; the last one stops it.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from bridge.config.embedded_redis import free_port
from tests.processes import alive, descendants

ECHO = "sip:echo@contoso.com"
TEXT = "Hello from the demo test"


@dataclass
class DemoRun:
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    fresh: queue.Queue[str] = field(default_factory=queue.Queue)
    api: str = ""
    key: str = ""
    logs: str = ""
    descendants: set[int] = field(default_factory=set)
    message_id: str = ""

    def read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            self.fresh.put(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        compiled = re.compile(pattern)
        for line in list(self.lines):
            if match := compiled.search(line):
                return match
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.fresh.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None and self.fresh.empty():
                    break
                continue
            if match := compiled.search(line):
                return match
        output = "\n".join(self.lines[-40:])
        raise AssertionError(f"no line matching {pattern!r} within {timeout}s; output:\n{output}")

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoRun]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bridge.demo", "--port", str(port), "--time-scale", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")},
        start_new_session=True,  # a process group of its own, as in a terminal
    )
    run = DemoRun(process)
    threading.Thread(target=run.read, daemon=True).start()
    try:
        run.wait_for(r"^ready\b", timeout=90)
        run.api = run.wait_for(r"^API: (http://\S+)$", 1).group(1)
        run.key = run.wait_for(r"^API key: (\S+)$", 1).group(1)
        run.logs = run.wait_for(r"^\s+logs:\s+(\S+)$", 1).group(1)
        run.descendants = set(descendants(process.pid))
        yield run
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for pid in set(descendants(process.pid)) | run.descendants:
            if alive(pid):  # never leave strays behind, whatever failed
                os.kill(pid, signal.SIGKILL)


def test_prints_the_api_address_key_and_a_curl_command(demo: DemoRun) -> None:
    assert demo.api == f"http://127.0.0.1:{demo.api.rsplit(':', 1)[1]}"
    assert len(demo.key) >= 16
    assert f"  export BRIDGE={demo.api}" in demo.lines
    assert f"  export API_KEY={demo.key}" in demo.lines
    curl = next(line for line in demo.lines if "curl -s -X POST" in line)
    assert "$BRIDGE/messages" in curl and "Bearer $API_KEY" in curl
    assert ECHO in curl
    # Roles, redis, simulator (and its scheduler / gunicorn workers) are all running.
    assert len(demo.descendants) >= 5
    assert {p.name for p in Path(demo.logs).iterdir()} >= {"api.log", "worker.log", "poller.log"}


def test_the_metrics_addresses_it_prints_answer_with_each_roles_metrics(demo: DemoRun) -> None:
    """Worker and poller each bind a port of their own choosing (no port picked beforehand that
    another process could take first); the banner names them."""
    urls = {
        role: url
        for line in demo.lines
        if (found := re.match(r"^\s+(http://127\.0\.0\.1:\d+/metrics)\s+\((\w+):", line))
        for url, role in [found.groups()]
    }
    assert set(urls) == {"worker", "poller"}, demo.lines
    assert urls["worker"] != urls["poller"]
    for role, url in urls.items():
        answer = requests.get(url, timeout=5)
        assert answer.status_code == 200, (role, answer.text[:200])
        assert "# TYPE" in answer.text and "ucwa_bridge" in answer.text, role


def test_secrets_other_than_the_api_key_and_webhook_secret_stay_out_of_the_output(
    demo: DemoRun,
) -> None:
    output = "\n".join(demo.lines)
    # the webhook secret is printed once, for a receiver of the user's own
    assert [line for line in demo.lines if "whsec_" in line] == [
        line for line in demo.lines if line.startswith("Webhook secret")
    ]
    assert len([line for line in demo.lines if "whsec_" in line]) == 1
    assert "cwt=" not in output


def test_a_message_to_the_echo_user_is_delivered(demo: DemoRun) -> None:
    sent = requests.post(
        f"{demo.api}/messages", json={"to": ECHO, "text": TEXT}, headers=demo.auth(), timeout=10
    )
    assert sent.status_code == 202, sent.text
    message_id = demo.message_id = sent.json()["id"]
    deadline = time.monotonic() + 30
    status = ""
    while time.monotonic() < deadline:
        view = requests.get(f"{demo.api}/messages/{message_id}", headers=demo.auth(), timeout=5)
        assert view.status_code == 200, view.text
        status = view.json()["status"]
        if status in ("delivered", "failed", "expired"):
            break
        time.sleep(0.2)
    assert status == "delivered", view.text


def test_the_curl_of_the_second_account_sends_from_it(demo: DemoRun) -> None:
    curl = next(line for line in demo.lines if '"from": "alerts"' in line)
    body = json.loads(curl.split(" -d '", 1)[1].rstrip("'"))
    sent = requests.post(f"{demo.api}/messages", json=body, headers=demo.auth(), timeout=10)
    assert sent.status_code == 202, sent.text
    assert sent.json()["from"] == "alerts"
    message_id = sent.json()["id"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        view = requests.get(f"{demo.api}/messages/{message_id}", headers=demo.auth(), timeout=5)
        if view.json()["status"] in ("delivered", "failed", "expired"):
            break
        time.sleep(0.2)
    assert view.json()["status"] == "delivered", view.text
    ready = requests.get(f"{demo.api}/readyz", timeout=5).json()
    assert ready["status"] == "ready" and set(ready["accounts"]) == {"bot", "alerts"}


def test_the_echoed_reply_and_the_status_reach_the_webhook_receiver(demo: DemoRun) -> None:
    # The echo user answers with the same text; the receiver verified its signature.
    if not demo.message_id:
        # The previous test ran in another xdist worker, with a demo of its own: send here.
        sent = requests.post(
            f"{demo.api}/messages", json={"to": ECHO, "text": TEXT}, headers=demo.auth(), timeout=10
        )
        assert sent.status_code == 202, sent.text
        demo.message_id = sent.json()["id"]
    line = rf'^\[webhook\] message\.received from {re.escape(ECHO)}: "{re.escape(TEXT)}"$'
    demo.wait_for(line, timeout=30)
    demo.wait_for(rf"^\[webhook\] message\.delivered {demo.message_id}$", timeout=10)
    assert not any("bad signature" in seen for seen in demo.lines)


def test_ctrl_c_stops_every_process_and_removes_the_temp_dir(demo: DemoRun) -> None:
    started = time.monotonic()
    os.killpg(demo.process.pid, signal.SIGINT)  # Ctrl-C: the whole foreground process group
    assert demo.process.wait(timeout=40) == 0
    took = time.monotonic() - started
    demo.wait_for(r"^stopped$", timeout=5)
    print(f"\ndemo stopped {took:.1f}s after Ctrl-C")
    assert not any("did not stop" in line for line in demo.lines), demo.lines
    assert took < 10
    leftovers = [pid for pid in demo.descendants if alive(pid)]
    assert leftovers == []
    assert not Path(demo.logs).exists()

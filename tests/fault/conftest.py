"""Fault-suite fixtures: the e2e bridge, process killing, outcome accounting and figures.

Every fault test ends with one figure line (trials, accepted, delivered, failed with a reason,
lost, duplicated, retries, time to recover). ``report`` prints it (visible with ``-s``), appends it
to ``fault-figures.txt`` in pytest's base temporary directory and lists it in the terminal summary.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from rq import Worker

from tests.conftest import FIGURE_PROPERTY
from tests.e2e.conftest import (  # noqa: F401 - fixtures used by the fault tests
    FINAL,
    Bridge,
    make_bridge,
    receiver,
)
from tests.processes import descendants

MESSAGE_ID = re.compile(r"msg_[0-9a-f]{32}")

# The API's per-key rate limit is not under test here: the load and the status polling exceed it.
FAULT_ENV = {"BRIDGE_RATE_LIMIT": "off"}

# Extra simulated users (behaviour accept) so that many recipient lines run in parallel.
PEOPLE = [f"sip:user{n}@contoso.com" for n in range(8)]


# -- figures ------------------------------------------------------------------------------------


Report = Callable[..., str]


@pytest.fixture()
def report(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Report:
    """``report(**figures)``: one line for this test, shown however pytest is run."""

    def emit(**figures: Any) -> str:
        parts = [f"{k}={_fmt(v)}" for k, v in figures.items()]
        line = f"{request.node.name}: " + " ".join(parts)
        print(f"\nFIGURE {line}", flush=True)
        # Carried on the test's report, so the summary has it under pytest-xdist as well.
        request.node.user_properties.append((FIGURE_PROPERTY, line))
        path = tmp_path_factory.getbasetemp() / "fault-figures.txt"
        with path.open("a") as out:
            out.write(line + "\n")
        return line

    return emit


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, dict):
        return ",".join(f"{k}:{v}" for k, v in sorted(value.items())) or "-"
    return str(value)


# -- processes ----------------------------------------------------------------------------------


def kill9(proc: Any) -> None:
    """SIGKILL a role and everything it started (a worker's RQ scheduler), as a node loss would."""
    children = descendants(proc.pid)
    proc.send_signal(signal.SIGKILL)
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    proc.wait(timeout=10)


def worker_job(bridge: Bridge, pid: int) -> tuple[str, str | None]:
    """What the RQ worker with ``pid`` is doing: ``idle``, or its job kind and the send step of
    its message (``send:posting_cold``…), with the message id."""
    client = bridge.redis()
    for worker in Worker.all(connection=client):
        if worker.pid != pid:
            continue
        job_id = worker.get_current_job_id()
        if not job_id:
            return "idle", None
        found = MESSAGE_ID.search(job_id)
        if not found:
            return "webhook", None
        raw = client.get(f"msg:{found.group(0)}")
        step = json.loads(raw).get("step", "?") if raw else "?"
        return f"{job_id.split('-', 1)[0]}:{step}", found.group(0)
    return "starting", None


def claimed_by(bridge: Bridge, pid: int) -> set[str]:
    """The messages that every job runner of the worker process ``pid`` holds and has claimed
    (``posting_*``): their POST may have gone out, so if the process dies they may end
    ``outcome_unknown``, never sent twice."""
    client = bridge.redis()
    held = []
    for worker in Worker.all(connection=client):
        job_id = worker.get_current_job_id() if worker.pid == pid else None
        found = MESSAGE_ID.search(job_id or "")
        if found:
            held.append(found.group(0))
    claimed = set()
    for message_id in held:
        raw = client.get(f"msg:{message_id}")
        if raw and str(json.loads(raw).get("step", "")).startswith("posting"):
            claimed.add(message_id)
    return claimed


def add_people(bridge: Bridge, people: list[str] = PEOPLE) -> None:
    for sip in people:
        bridge.sim_call("POST", "/_sim/users", {"sip": sip, "password": "pw"})


# -- outcomes -----------------------------------------------------------------------------------


@dataclass
class Ledger:
    """Accepted messages in acceptance order: id → (recipient, text); texts are unique."""

    sent: dict[str, tuple[str, str]] = field(default_factory=dict)
    senders: dict[str, str] = field(default_factory=dict)  # id → account, where one was named
    refused: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def post(self, bridge: Bridge, to: str, text: str, sender: str | None = None) -> str | None:
        """POST one message (from the account ``sender``, if given); remember it on a 202, count
        anything else as refused."""
        body = (
            {"to": to, "text": text} if sender is None else {"to": to, "text": text, "from": sender}
        )
        try:
            response = bridge.post(body)
        except requests.RequestException as exc:
            with self.lock:
                self.refused[type(exc).__name__] += 1
            return None
        with self.lock:
            if response.status_code != 202:
                self.refused[str(response.status_code)] += 1
                return None
            message_id = str(response.json()["id"])
            self.sent[message_id] = (to, text)
            if sender is not None:
                self.senders[message_id] = sender
            return message_id

    @property
    def ids(self) -> list[str]:
        with self.lock:
            return list(self.sent)


def final_states(bridge: Bridge, ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    """The last record seen for each id via the API, polling until all are final or time is up."""
    seen: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while True:
        for message_id in ids:
            if seen.get(message_id, {}).get("status") in FINAL:
                continue
            try:
                response = bridge.api("GET", f"/messages/{message_id}")
            except requests.RequestException:
                continue
            if response.status_code == 429:
                time.sleep(1.0)
                continue
            if response.status_code == 200:
                seen[message_id] = response.json()
            elif response.status_code == 404:
                seen[message_id] = {"status": "missing"}
        if all(seen.get(i, {}).get("status") in FINAL for i in ids):
            return seen
        if time.monotonic() > deadline:
            return seen
        time.sleep(0.3)


@dataclass
class Outcome:
    """The user-visible result of a run: statuses via the API and what recipients received."""

    accepted: int
    delivered: int
    failed_with_reason: int
    failed_without_reason: int
    lost: int  # never final, missing, or delivered but never received
    duplicated: int  # extra copies in recipients' inboxes
    out_of_order: int  # recipients whose texts arrived out of acceptance order
    received_but_failed: int
    retries: int  # UCWA send attempts beyond the first, summed over messages
    codes: Counter[str]
    stuck: list[str]
    twice: list[str]  # texts received more than once
    finals: dict[str, dict[str, Any]]  # the last record seen of each message

    def figures(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "delivered": self.delivered,
            "failed_with_reason": self.failed_with_reason,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "retries": self.retries,
            "failed_but_received": self.received_but_failed,
        }

    def check(self) -> None:
        """The suite's invariant: every accepted message ends delivered or failed with a reason,
        and nobody receives anything twice."""
        assert self.lost == 0, f"lost {self.lost}: not final {self.stuck}"
        assert self.failed_without_reason == 0
        assert self.duplicated == 0, f"received twice: {self.twice}"
        assert self.out_of_order == 0
        assert self.delivered + self.failed_with_reason == self.accepted


def outcome(bridge: Bridge, ledger: Ledger, timeout: float) -> Outcome:
    finals = final_states(bridge, ledger.ids, timeout)
    inboxes: dict[str, list[str]] = {}
    for to in {to for to, _ in ledger.sent.values()}:
        inboxes[to] = bridge.texts(to)
    delivered = failed_reason = failed_bare = lost = received_failed = retries = 0
    codes: Counter[str] = Counter()
    stuck: list[str] = []
    for message_id, (to, text) in ledger.sent.items():
        record = finals.get(message_id, {})
        status = record.get("status")
        received = text in inboxes[to]
        retries += max(int(record.get("attempts") or 0) - 1, 0)
        if status == "delivered":
            delivered += 1
            if not received:
                lost += 1
        elif status in ("failed", "expired"):
            code = (record.get("error") or {}).get("code")
            codes[str(code)] += 1
            if code:
                failed_reason += 1
            else:
                failed_bare += 1
            received_failed += received
        else:
            lost += 1
            stuck.append(f"{message_id}:{status}:{record.get('history')}")
    ours = {text for _, text in ledger.sent.values()}
    duplicated = 0
    out_of_order = 0
    twice: list[str] = []
    for to, texts in inboxes.items():
        counts = Counter(t for t in texts if t in ours)
        duplicated += sum(c - 1 for c in counts.values() if c > 1)
        twice += [f"{to}: {t}" for t, c in counts.items() if c > 1]
        got = [t for t in dict.fromkeys(texts) if t in ours]
        lines: dict[str | None, list[str]] = defaultdict(list)  # order is per account and person
        for message_id, (dest, text) in ledger.sent.items():
            if dest == to:
                lines[ledger.senders.get(message_id)].append(text)
        for order in lines.values():
            arrived = [t for t in got if t in set(order)]
            if arrived != [t for t in order if t in set(arrived)]:
                out_of_order += 1
    return Outcome(
        accepted=len(ledger.sent),
        delivered=delivered,
        failed_with_reason=failed_reason,
        failed_without_reason=failed_bare,
        lost=lost,
        duplicated=duplicated,
        out_of_order=out_of_order,
        received_but_failed=received_failed,
        retries=retries,
        codes=codes,
        stuck=stuck,
        twice=twice,
        finals=finals,
    )


def settled_at(record: dict[str, Any]) -> float:
    """When a final record ended (epoch seconds), from its history."""
    from bridge.outbound.messages import parse_time

    for status in FINAL:
        stamp = (record.get("history") or {}).get(status)
        if stamp:
            return parse_time(stamp)
    return float("nan")


@pytest.fixture()
def seed(request: pytest.FixtureRequest) -> Iterator[int]:
    """A random seed per test (``FAULT_SEED`` fixes it), printed so a run can be repeated."""
    value = int(os.environ.get("FAULT_SEED") or time.time_ns() % 1_000_000)
    print(f"\n{request.node.name}: FAULT_SEED={value}", flush=True)
    yield value

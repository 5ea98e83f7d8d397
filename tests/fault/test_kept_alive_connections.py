"""The bridge on kept-alive UCWA connections, as IIS serves them: requests share connections, a
connection the server closed while idle costs nothing, and a send POST whose kept-alive
connection is reset or closed (before or after the server acted on it, or by an idle close that
crosses the POST on the wire) is never sent twice: it ends delivered once or failed
``outcome_unknown``.

Real simulator (keep-alive and gzip on, as by default), real Redis, API, poller and worker.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from typing import Any

import pytest

from tests.e2e.conftest import ALICE, Bridge, MakeBridge
from tests.fault.closing_proxy import ClosingProxy
from tests.fault.conftest import FAULT_ENV, Report


def connection_figures(bridge: Bridge) -> dict[str, Any]:
    """UCWA requests per TCP connection, from the request log (control requests left out)."""
    entries = bridge.ucwa_requests()
    per_connection = Counter(e["connection"] for e in entries if e["connection"] is not None)
    http = bridge.sim_call("GET", "/_sim/http")
    return {
        "ucwa_requests": sum(per_connection.values()),
        "connections": len(per_connection),
        "per_connection": sum(per_connection.values()) / max(len(per_connection), 1),
        "sim_accepted": http["connections_accepted"],
        "sim_requests": http["requests"],
    }


# One job runner: its one connection carries every send, so the faults below meet the message
# they are aimed at. Runners (each a connection of its own) are ``tests/e2e/test_job_runners.py``'s.
ONE_RUNNER = {**FAULT_ENV, "BRIDGE_WORKER_RUNNERS": "1"}


def send_kind_connections(bridge: Bridge, kind: str) -> list[int]:
    return [e["connection"] for e in bridge.ucwa_requests() if e["kind"] == kind]


def test_sends_reuse_connections_and_an_idle_close_between_sends_costs_nothing(
    make_bridge: MakeBridge, report: Report
) -> None:
    bridge = make_bridge(env=ONE_RUNNER)
    texts = [f"kept-alive #{n}" for n in range(6)]
    for text in texts:
        message_id = bridge.send(ALICE, text)
        assert bridge.wait_final(message_id)[message_id]["status"] == "delivered"
    figures = connection_figures(bridge)
    assert figures["per_connection"] > 1, figures
    posts = send_kind_connections(bridge, "startMessaging") + send_kind_connections(
        bridge, "sendMessage"
    )
    assert len(set(posts)) == 1  # the worker sent all six on one connection

    # The server now closes a connection idle for 1 s; the worker's one sits idle for 2 s.
    bridge.sim_call("PATCH", "/_sim/http", {"idle_timeout": 1})
    time.sleep(2.5)
    after_idle = bridge.send(ALICE, "after the idle close")
    record = bridge.wait_final(after_idle)[after_idle]
    assert record["status"] == "delivered" and record["attempts"] == 1
    assert bridge.texts(ALICE) == [*texts, "after the idle close"]
    last_post = send_kind_connections(bridge, "sendMessage")[-1]
    assert last_post not in posts  # a new connection, opened before the POST went out
    report(**figures, idle_close_attempts=record["attempts"])


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ({"reset_connection": True}, "failed"),  # the server never acted on it
        pytest.param(
            {"reset_connection": True, "after_processing": True},
            "delivered",
            marks=pytest.mark.long,  # the path of any answer lost after the server acted
        ),
        # FIN, no reset: the server closes the kept-alive connection instead of reading the POST
        ({"drop_connection": True}, "failed"),
        pytest.param(
            {"drop_connection": True, "after_processing": True}, "delivered", marks=pytest.mark.long
        ),
    ],
    ids=[
        "reset-before-processing",
        "reset-after-processing",
        "close-before-processing",
        "close-after-processing",
    ],
)
def test_a_send_post_whose_kept_alive_connection_breaks_is_never_sent_twice(
    make_bridge: MakeBridge, report: Report, fault: dict[str, Any], expected: str
) -> None:
    bridge = make_bridge(env=ONE_RUNNER)
    first = bridge.send(ALICE, "opens the conversation")
    assert bridge.wait_final(first)[first]["status"] == "delivered"
    bridge.sim_call(
        "POST",
        "/_sim/faults",
        {"match": {"rel": "sendMessage", "connection": "reused"}, "times": 1, **fault},
    )
    hit = bridge.send(ALICE, "on a connection that breaks")
    record = bridge.wait_final(hit, timeout=40)[hit]
    after = bridge.send(ALICE, "after it")
    assert bridge.wait_final(after)[after]["status"] == "delivered"

    assert bridge.sim_call("GET", "/_sim/faults") == []  # the fault fired
    received = Counter(bridge.texts(ALICE))
    sent_posts = [e for e in bridge.ucwa_requests() if e["kind"] == "sendMessage"]
    assert received["on a connection that breaks"] == (1 if expected == "delivered" else 0)
    assert received["after it"] == 1
    assert record["status"] == expected
    if expected == "failed":
        assert record["error"]["code"] == "outcome_unknown"
    # Never repeated: one sendMessage for it, one for the message after it.
    assert len(sent_posts) == 2
    report(
        fault="+".join(k for k, v in fault.items() if v),
        status=record["status"],
        code=(record.get("error") or {}).get("code") or "-",
        received=received["on a connection that breaks"],
        attempts=record["attempts"],
    )


def test_a_close_that_crosses_the_send_post_never_sends_it_twice(
    make_bridge: MakeBridge, report: Report
) -> None:
    """The server closes the worker's idle kept-alive connection (idle timeout 0.5 s, while the
    bridge would reuse one idle for up to 30 s) and the FIN crosses the next send POST: the
    pool's check before writing sees a live connection, the POST is written, the connection
    ends with no answer. The POST never reached the server; the bridge cannot know that."""
    proxy = ClosingProxy(re.compile(rb"^POST \S*/(messagingInvitations|messaging/messages)\b"))
    bridge = make_bridge(env=ONE_RUNNER, proxy=proxy.start())
    first = bridge.send(ALICE, "opens the conversation")
    assert bridge.wait_final(first)[first]["status"] == "delivered"
    bridge.sim_call("PATCH", "/_sim/http", {"idle_timeout": 0.5})
    time.sleep(1.5)  # closed by the server after 0.5 s; the proxy holds the FIN back

    hit = bridge.send(ALICE, "meets the close")
    record = bridge.wait_final(hit, timeout=40)[hit]
    after = bridge.send(ALICE, "after it")
    assert bridge.wait_final(after)[after]["status"] == "delivered"

    [crossed] = proxy.crossed  # the race took place, once, and on the send POST
    assert crossed.startswith("POST ") and "/messaging/messages" in crossed
    received = Counter(bridge.texts(ALICE))
    assert received["meets the close"] == 0 and received["after it"] == 1
    # Nothing reached the server twice; the crossed POST did not reach it at all.
    sent_posts = [e for e in bridge.ucwa_requests() if e["kind"] == "sendMessage"]
    assert len(sent_posts) == 1 and sent_posts[0]["status"] == 201
    # At most once: a POST that may have been acted on is never repeated, so it fails, with
    # the reason, rather than risk a duplicate.
    assert (record["status"], record["error"]["code"]) == ("failed", "outcome_unknown")
    assert record["attempts"] == 1
    report(
        crossed=crossed.split(" ")[0],
        status=record["status"],
        code=record["error"]["code"],
        received=received["meets the close"],
        held_closes=proxy.held,
    )

"""POST /messages to a delivered IM, end to end: gunicorn API, RQ worker, poller, simulator."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import pytest
from rq.registry import ScheduledJobRegistry

from tests.e2e.conftest import ALICE, API_KEY, BOB, BOT, BOT_PASSWORD, MakeBridge, wait_for
from tests.processes import alive, descendants


def test_cold_then_warm_send_costs_one_ucwa_request_each(make_bridge: MakeBridge) -> None:
    bridge = make_bridge()
    bridge.sim_call("DELETE", "/_sim/requests")

    first = bridge.send(ALICE, "Deploy finished")
    done = bridge.wait_final(first)[first]
    assert done["status"] == "delivered", done
    assert {"queued", "sending", "delivered"} <= set(done["history"])
    counts = bridge.request_counts()
    assert counts.get("startMessaging") == 1
    assert counts.get("sendMessage", 0) == 0

    second = bridge.send(ALICE, "Second line")
    assert bridge.wait_final(second)[second]["status"] == "delivered"
    counts = bridge.request_counts()
    assert counts.get("startMessaging") == 1, "a warm send must not open a new conversation"
    assert counts.get("sendMessage") == 1
    assert bridge.texts(ALICE) == ["Deploy finished", "Second line"]
    assert all(m["from"] == BOT for m in bridge.inbox(ALICE))


def test_html_cold_and_warm(make_bridge: MakeBridge) -> None:
    bridge = make_bridge()
    first = bridge.send(BOB, html="<b>Build</b> is <i>green</i>")
    second = bridge.send(BOB, html="<p>Release <a href='https://example.org'>notes</a></p>")
    results = bridge.wait_final(first, second)
    assert [results[i]["status"] for i in (first, second)] == ["delivered", "delivered"]
    inbox = bridge.inbox(BOB)
    # what arrives is the sanitised HTML the API answered with (attributes re-quoted)
    assert [m["html"] for m in inbox] == [results[first]["html"], results[second]["html"]]
    assert inbox[0]["html"] == "<b>Build</b> is <i>green</i>"
    assert inbox[1]["html"].startswith('<p>Release <a href="https://example.org"')
    assert inbox[1]["html"].endswith(">notes</a></p>")
    assert inbox[0]["text"] == "Build is green"


def test_markdown_is_delivered_as_the_html_the_api_answered(make_bridge: MakeBridge) -> None:
    bridge = make_bridge()
    accepted = bridge.post(
        {"to": BOB, "markdown": "**Build** is *green*: [notes](https://example.org) <b>x</b>"}
    )
    assert accepted.status_code == 202, accepted.text
    html = accepted.json()["html"]
    message_id = accepted.json()["id"]

    assert bridge.wait_final(message_id)[message_id]["status"] == "delivered"
    inbox = bridge.inbox(BOB)
    assert [m["html"] for m in inbox] == [html]
    assert html.startswith("<p><strong>Build</strong> is <em>green</em>: <a href=")
    assert "&lt;b&gt;x&lt;/b&gt;" in html  # raw HTML in markdown arrives as text
    assert inbox[0]["text"] == "Build is green: notes <b>x</b>"


def test_failures_carry_a_stable_code_and_the_ucwa_reason(make_bridge: MakeBridge) -> None:
    bridge = make_bridge()
    ids = {
        "declined": bridge.send("sip:decliner@contoso.com", "hi"),
        "no_answer": bridge.send("sip:silent@contoso.com", "hi"),
        "offline": bridge.send("sip:away@contoso.com", "hi"),
        "not_found": bridge.send("sip:nobody@contoso.com", "hi"),
    }
    results = bridge.wait_final(*ids.values())
    for code, message_id in ids.items():
        message = results[message_id]
        assert message["status"] == "failed", message
        assert message["error"]["code"] == code, message
        assert message["error"]["ucwa"]["code"], message
        assert "failed" in message["history"]
    declined = results[ids["declined"]]["error"]["ucwa"]
    assert (declined["code"], declined["subcode"]) == ("RemoteFailure", "Declined")


def test_x_ms_diagnostics_show_in_the_failed_message_and_the_worker_log(
    make_bridge: MakeBridge,
) -> None:
    bridge = make_bridge()
    diagnostics = '1000;source="pool1.contoso.com";reason="Federation is not allowed."'
    bridge.sim_call(
        "POST",
        "/_sim/faults",
        {
            "match": {"rel": "startMessaging"},
            "status": 403,
            "message": "Not allowed.",
            "diagnostics": diagnostics,
            "times": 1,
        },
    )
    message_id = bridge.send(ALICE, "hi")
    message = bridge.wait_final(message_id)[message_id]
    assert message["status"] == "failed" and message["error"]["code"] == "forbidden"
    assert message["error"]["ucwa"] == {
        "code": "Forbidden",
        "subcode": None,
        "message": "Not allowed.",
        "diagnostics": diagnostics,
    }
    worker_lines = [
        json.loads(line)
        for path in bridge.workdir.glob("worker-*.log")
        for line in path.read_text(errors="replace").splitlines()
        if "X-Ms-diagnostics" in line
    ]
    assert [line["ucwa_diagnostics"] for line in worker_lines] == [diagnostics]
    assert worker_lines[0]["ucwa_status"] == 403


def test_transient_faults_are_retried_and_ambiguous_ones_never_resent(
    make_bridge: MakeBridge,
) -> None:
    bridge = make_bridge(env={"BRIDGE_RATE_LIMIT": "off"})  # the status polling exceeds it
    bridge.sim_call(
        "POST",
        "/_sim/faults",
        {"match": {"rel": "startMessaging"}, "status": 503, "times": 2, "retry_after": 1},
    )
    first = bridge.send(ALICE, "after two 503s")
    message = bridge.wait_final(first)[first]
    assert message["status"] == "delivered", message
    assert message["attempts"] >= 3

    bridge.sim_call(
        "POST",
        "/_sim/faults",
        {"match": {"rel": "sendMessage"}, "drop_connection": True, "times": 1},
    )
    second = bridge.send(ALICE, "after a dropped connection")
    bridge.sim_call(
        "POST", "/_sim/faults", {"match": {"rel": "sendMessage"}, "status": 500, "times": 1}
    )
    third = bridge.send(ALICE, "after a 500")
    fourth = bridge.send(ALICE, "the line goes on")
    results = bridge.wait_final(second, third, fourth)
    # A dropped connection after the request left, or a 500, may hide a send UCWA carried out:
    # it is never sent again. No outcome came within the window, so it ends outcome_unknown
    # (the simulator had not acted on either), and the next message goes.
    for ambiguous in (second, third):
        assert results[ambiguous]["status"] == "failed", results[ambiguous]
        assert results[ambiguous]["error"]["code"] == "outcome_unknown"
        assert results[ambiguous]["attempts"] == 1
    assert results[fourth]["status"] == "delivered", results[fourth]
    assert bridge.texts(ALICE) == ["after two 503s", "the line goes on"]


def test_token_and_application_expiry_mid_flow(make_bridge: MakeBridge) -> None:
    bridge = make_bridge()
    first = bridge.send(ALICE, "one")
    assert bridge.wait_final(first)[first]["status"] == "delivered"

    bridge.sim_call("POST", "/_sim/expire", {"user": BOT, "what": "token"})
    second = bridge.send(ALICE, "two")
    assert bridge.wait_final(second)[second]["status"] == "delivered"

    generation = int(bridge.redis().hget(f"session:{BOT}", "generation") or 0)
    bridge.sim_call("POST", "/_sim/expire", {"user": BOT, "what": "application"})
    wait_for(
        lambda: int(bridge.redis().hget(f"session:{BOT}", "generation") or 0) > generation,
        20,
        "the poller to rebuild the session",
        bridge.logs,
    )
    third = bridge.send(ALICE, "three")
    assert bridge.wait_final(third)[third]["status"] == "delivered"
    assert bridge.texts(ALICE) == ["one", "two", "three"]


def test_event_channel_resume_drops_stale_conversations(make_bridge: MakeBridge) -> None:
    bridge = make_bridge()
    first = bridge.send(ALICE, "before")
    assert bridge.wait_final(first)[first]["status"] == "delivered"
    bridge.sim_call("POST", "/_sim/expire", {"user": BOT, "what": "event_channel"})
    time.sleep(1.0)
    second = bridge.send(ALICE, "after")
    assert bridge.wait_final(second)[second]["status"] == "delivered"
    assert bridge.texts(ALICE) == ["before", "after"]


def test_messages_to_one_recipient_keep_order_others_go_in_parallel(
    make_bridge: MakeBridge,
) -> None:
    bridge = make_bridge()
    bridge.start_worker()
    lines = [f"line {n}" for n in range(6)]
    ids = [bridge.send(ALICE, line) for line in lines]
    ids += [bridge.send(BOB, "parallel")]
    results = bridge.wait_final(*ids, timeout=45)
    assert all(m["status"] == "delivered" for m in results.values()), results
    assert bridge.texts(ALICE) == lines
    assert bridge.texts(BOB) == ["parallel"]


def test_idempotent_repeat_returns_the_first_answer_and_sends_once(
    make_bridge: MakeBridge,
) -> None:
    bridge = make_bridge()
    headers = {"Idempotency-Key": "incident-42-page"}
    first = bridge.post({"to": ALICE, "text": "paging"}, headers)
    again = bridge.post({"to": ALICE, "text": "paging"}, headers)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Location"] == first.headers["Location"]
    other = bridge.post({"to": ALICE, "text": "different"}, headers)
    assert other.status_code == 422
    bridge.wait_final(first.json()["id"])
    time.sleep(0.5)
    assert bridge.texts(ALICE) == ["paging"]


def test_message_expires_when_no_poller_is_alive(make_bridge: MakeBridge) -> None:
    bridge = make_bridge(start=False)
    bridge.start_api()
    bridge.start_worker()
    message_id = bridge.send(ALICE, "too late", validity=2)
    message = bridge.wait_final(message_id, timeout=20)[message_id]
    assert message["status"] == "expired", message
    assert message["error"]["code"] == "expired"
    assert bridge.inbox(ALICE) == []


@pytest.mark.timeout(240)  # recovery of a job whose worker died can take up to 150 s
def test_worker_killed_mid_send_still_delivers_exactly_once(make_bridge: MakeBridge) -> None:
    bridge = make_bridge()
    bridge.sim_call(
        "POST", "/_sim/faults", {"match": {"rel": "startMessaging"}, "delay_ms": 1500, "times": 1}
    )
    message_id = bridge.send(ALICE, "survives a crash")
    redis_client = bridge.redis()

    def posting() -> bool:
        raw = redis_client.get(f"msg:{message_id}")
        return raw is not None and b'"step":"posting_cold"' in raw

    wait_for(posting, 10, "the worker to start posting")
    # Killed with the POST out (the server holds it 1.5 s): a kill between the claim and the
    # POST leaves nothing that can tell whether it was sent, and the message then fails
    # outcome_unknown, as documented, instead of being sent twice.
    wait_for(
        lambda: bridge.request_counts().get("startMessaging") == 1,
        10,
        "the POST to reach the server",
    )
    worker = bridge.procs["worker"][0]
    children = descendants(worker.pid)  # its RQ scheduler
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=5)
    # the scheduler does not outlive its worker (it would hold the queue's scheduler lock)
    wait_for(lambda: not any(alive(pid) for pid in children), 15, "the scheduler to stop")
    bridge.start_worker()
    # Recovery of a job whose worker died before its POST left takes up to about two minutes.
    message = bridge.wait_final(message_id, timeout=150)[message_id]
    assert message["status"] == "delivered", message
    time.sleep(1.0)
    assert bridge.texts(ALICE) == ["survives a crash"]


def test_standby_poller_takes_over_and_nothing_is_lost(make_bridge: MakeBridge) -> None:
    bridge = make_bridge()
    active = bridge.procs["poller"][0]
    bridge.start_poller(wait=False)  # the standby
    first = bridge.send(ALICE, "before failover")
    assert bridge.wait_final(first)[first]["status"] == "delivered"

    active.send_signal(signal.SIGKILL)
    active.wait(timeout=5)
    killed_at = time.monotonic()
    ids = [bridge.send(ALICE, f"during failover {n}") for n in range(3)]
    results = bridge.wait_final(*ids, timeout=40)
    took_over = time.monotonic() - killed_at
    assert all(m["status"] == "delivered" for m in results.values()), results
    assert bridge.texts(ALICE) == ["before failover"] + [f"during failover {n}" for n in range(3)]
    assert took_over < 30


def test_idle_conversations_are_ended_and_secrets_never_logged(make_bridge: MakeBridge) -> None:
    bridge = make_bridge(env={"BRIDGE_CONVERSATION_IDLE_S": "1", "BRIDGE_LOG_LEVEL": "DEBUG"})
    first = bridge.send(ALICE, "short chat")
    assert bridge.wait_final(first)[first]["status"] == "delivered"
    wait_for(
        lambda: bridge.request_counts().get("stopMessaging", 0) >= 1,
        15,
        "the idle conversation to be ended",
        bridge.logs,
    )
    second = bridge.send(ALICE, "a new chat")
    assert bridge.wait_final(second)[second]["status"] == "delivered"
    assert bridge.request_counts().get("startMessaging") == 2
    assert bridge.texts(ALICE) == ["short chat", "a new chat"]

    token = (bridge.redis().hget(f"session:{BOT}", "token") or b"").decode()
    assert token.startswith("cwt=")
    logs = bridge.full_logs()
    assert logs, "the processes wrote no logs at all"
    assert BOT_PASSWORD not in logs
    assert token not in logs and token[4:] not in logs
    assert API_KEY not in logs


def test_resync_after_a_stale_cursor_drops_state_and_keeps_sending(
    make_bridge: MakeBridge,
) -> None:
    bridge = make_bridge()
    first = bridge.send(ALICE, "before restart")
    assert bridge.wait_final(first)[first]["status"] == "delivered"
    poller = bridge.procs["poller"][0]
    poller.send_signal(signal.SIGTERM)
    poller.wait(timeout=15)
    client = bridge.redis()
    cursor_key = f"poller:{BOT}:cursor"
    cursor = (client.hget(cursor_key, "cursor") or b"").decode()
    assert "ack=" in cursor
    # Restarting from an acknowledged position (ack=1) must be answered with resync.
    stale = cursor.split("ack=")[0] + "ack=1"
    client.hset(cursor_key, "cursor", stale)
    bridge.sim_call("DELETE", "/_sim/requests")
    bridge.start_poller()
    second = bridge.send(ALICE, "after resync")
    assert bridge.wait_final(second)[second]["status"] == "delivered"
    events = [
        r for r in bridge.sim_call("GET", "/_sim/requests")["requests"] if r["kind"] == "events"
    ]
    assert any("ack=1" in r["path"] for r in events), events
    assert bridge.texts(ALICE) == ["before restart", "after resync"]
    assert "resynced or resumed" in bridge.full_logs()


def test_discovery_follows_the_redirect_to_the_home_pool(make_bridge: MakeBridge) -> None:
    bridge = make_bridge(redirect=True)
    message_id = bridge.send(ALICE, "via the home pool")
    assert bridge.wait_final(message_id)[message_id]["status"] == "delivered"
    log = bridge.sim_call("GET", "/_sim/requests")["requests"]
    roots = [r["path"] for r in log if r["kind"] == "root"]
    assert len(roots) >= 2 and roots[0] != roots[1], roots  # the first root redirected
    assert bridge.texts(ALICE) == ["via the home pool"]


def test_token_is_renewed_before_it_expires(make_bridge: MakeBridge) -> None:
    # tokens live 7 s (140 s scaled by 0.05); the poller renews 5 s before expiry, every 2 s
    bridge = make_bridge(token_lifetime=140, env={"BRIDGE_TOKEN_RENEW_MARGIN_S": "5"})
    sent = []
    deadline = time.monotonic() + 9
    while time.monotonic() < deadline:
        sent.append(bridge.send(ALICE, f"tick {len(sent)}"))
        time.sleep(1)
    finals = bridge.wait_final(*sent)
    assert {m["status"] for m in finals.values()} == {"delivered"}
    log = bridge.sim_call("GET", "/_sim/requests")["requests"]
    grants = [r for r in log if r["kind"] == "token"]
    assert len(grants) >= 3, [r["kind"] for r in log]  # the first grant and at least two renewals
    # no request met an expired token: the only 401s are the first discovery challenge and
    # the poller's deliberate renewals (a GET of the application without the old token)
    refused = [r for r in log if r["status"] == 401 and r["kind"] not in ("application", "user")]
    assert refused == [], [(r["kind"], r["path"]) for r in refused]
    assert bridge.texts(ALICE) == [f"tick {i}" for i in range(len(sent))]


def _watchdogs(bridge: Any) -> list[str]:
    """Outcome checks on the schedule or stored as jobs."""
    client = bridge.redis()
    scheduled = ScheduledJobRegistry("send", connection=client).get_job_ids()
    stored = [k.decode() for k in client.scan_iter("rq:job:check-*")]
    return [j for j in scheduled if j.startswith("check-")] + stored


def test_an_outcome_takes_its_watchdog_off_and_a_lost_one_is_still_checked(
    make_bridge: MakeBridge,
) -> None:
    """Every send schedules a check of its outcome (here after 3 s warm, 5 s cold); a message
    whose outcome arrives first takes it off in its final transition, so none runs."""
    bridge = make_bridge()
    cold = bridge.send(ALICE, "first, cold")
    warm = bridge.send(ALICE, "second, warm")
    assert {m["status"] for m in bridge.wait_final(cold, warm).values()} == {"delivered"}
    assert _watchdogs(bridge) == []
    time.sleep(6)  # past both watchdogs' times
    assert "outcome check" not in bridge.full_logs()

    # Event GETs held back 8 s: the warm watchdog (3 s) asks UCWA, and the message ends delivered.
    bridge.sim_call("POST", "/_sim/faults", {"match": {"rel": "events"}, "delay_ms": 8000})
    bridge.sim_call("POST", f"/_sim/users/{ALICE}/messages", {"to": BOT, "text": "wakes the GET"})
    time.sleep(1.0)  # the parked event GET has answered; the next one is held back
    late = bridge.send(ALICE, "outcome read late")
    message = bridge.wait_final(late, timeout=30)[late]
    assert message["status"] == "delivered", message
    assert "outcome check: delivered" in bridge.full_logs()

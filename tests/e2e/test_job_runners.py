"""``BRIDGE_WORKER_RUNNERS``: job runners of one worker process share its one UCWA request in
flight. While one runner's POST is out, another takes its next job; the simulator never holds
two of the process's requests at once, every message goes out once, and SIGTERM still ends the
process after the jobs it runs.
"""

from __future__ import annotations

import json
import signal
import time

from rq import Worker

from bench.curves import most_at_once
from tests.e2e.conftest import Bridge, MakeBridge, wait_for
from tests.fault.conftest import PEOPLE, add_people

SEND_KINDS = ("startMessaging", "sendMessage", "addMessaging")
DELAY_MS = 150


def runners_of(bridge: Bridge) -> list[Worker]:
    return [w for w in Worker.all(connection=bridge.redis()) if "send" in w.queue_names()]


def one_out_one_waiting(bridge: Bridge, delay_ms: int, first: str, second: str) -> tuple[str, str]:
    """A message to PEOPLE[0] whose startMessaging UCWA holds ``delay_ms``, and once it is out,
    one to PEOPLE[1] whose job another runner has taken (it holds the message's lock)."""
    bridge.sim_call(
        "POST",
        "/_sim/faults",
        {"match": {"rel": "startMessaging"}, "delay_ms": delay_ms, "times": 1},
    )
    out = bridge.send(PEOPLE[0], first)
    wait_for(
        lambda: bridge.request_counts().get("startMessaging", 0) == 1,
        10,
        "the first runner's startMessaging to reach UCWA",
        bridge.logs,
    )
    waiting = bridge.send(PEOPLE[1], second)
    wait_for(
        lambda: bridge.redis().exists(f"lock:send:{waiting}"),
        10,
        "another runner to take the next message's job",
        bridge.logs,
    )
    return out, waiting


def test_two_runners_keep_one_request_in_flight_and_send_each_message_once(
    make_bridge: MakeBridge,
) -> None:
    bridge = make_bridge(env={"BRIDGE_WORKER_RUNNERS": "2", "BRIDGE_RATE_LIMIT": "off"})
    add_people(bridge)
    wait_for(lambda: len(runners_of(bridge)) == 2, 15, "two RQ workers in one process", bridge.logs)
    assert {w.pid for w in runners_of(bridge)} == {bridge.procs["worker"][0].pid}
    # Webhook deliveries on the first runner only: in the order they were staged.
    assert sorted(tuple(w.queue_names()) for w in runners_of(bridge)) == [
        ("send",),
        ("send", "webhooks"),
    ]
    for kind in SEND_KINDS:  # long enough that two runners' POSTs would overlap if they could
        bridge.sim_call("POST", "/_sim/faults", {"match": {"rel": kind}, "delay_ms": DELAY_MS})
    bridge.sim_call("DELETE", "/_sim/requests")

    sent = {bridge.send(person, f"to {person}"): person for person in PEOPLE}
    started = time.monotonic()
    finals = bridge.wait_final(*sent, timeout=60)
    took = time.monotonic() - started

    assert {m["status"] for m in finals.values()} == {"delivered"}, finals
    for person in PEOPLE:
        assert bridge.texts(person) == [f"to {person}"]
    log = bridge.ucwa_requests()
    assert sum(1 for e in log if e["kind"] in SEND_KINDS) == len(PEOPLE)
    # One UCWA request in flight for the process, whatever its runners (the rest of the
    # simulator's log is the poller's)...
    assert most_at_once(e for e in log if e["kind"] in SEND_KINDS) == 1
    # ...and both runners ran send jobs.
    done = [int(w.successful_job_count) for w in runners_of(bridge)]
    assert len(done) == 2 and all(n > 0 for n in done), done
    assert took >= len(PEOPLE) * DELAY_MS / 1000  # the POSTs went one after another


def test_sigterm_ends_every_runner_after_its_job(make_bridge: MakeBridge) -> None:
    bridge = make_bridge(env={"BRIDGE_WORKER_RUNNERS": "3"})
    add_people(bridge)
    wait_for(lambda: len(runners_of(bridge)) == 3, 15, "three RQ workers", bridge.logs)
    first, second = one_out_one_waiting(
        bridge, 2500, "finished after SIGTERM", "waits behind the slot"
    )
    worker = bridge.procs["worker"][0]
    worker.send_signal(signal.SIGTERM)
    started = time.monotonic()
    code = worker.wait(timeout=20)
    took = time.monotonic() - started
    assert code == 0, bridge.logs()
    # Each running job ran to its end, the one that waited for the slot included.
    finals = bridge.wait_final(first, second, timeout=20)
    assert {m["status"] for m in finals.values()} == {"delivered"}, finals
    assert bridge.texts(PEOPLE[0]) == ["finished after SIGTERM"]
    assert bridge.texts(PEOPLE[1]) == ["waits behind the slot"]
    assert runners_of(bridge) == []  # every runner said it is gone
    assert took < 10, took
    print(f"three runners stopped {took:.1f}s after SIGTERM")


def test_a_message_waiting_for_the_slot_is_not_claimed_until_it_has_it(
    make_bridge: MakeBridge,
) -> None:
    """A claimed message is one whose POST may have gone out: a runner killed with it claimed
    would leave it failing ``outcome_unknown``. So a runner waiting for the slot has taken its
    job and the message's lock, and has claimed nothing."""
    bridge = make_bridge(env={"BRIDGE_WORKER_RUNNERS": "2"})
    add_people(bridge)
    wait_for(lambda: len(runners_of(bridge)) == 2, 15, "two RQ workers", bridge.logs)
    bridge.sim_call("DELETE", "/_sim/requests")
    first, second = one_out_one_waiting(bridge, 2000, "holds the slot", "waits for it")
    time.sleep(0.3)  # long enough for a claim to be written, were it not waiting
    waiting = json.loads(bridge.redis().get(f"msg:{second}") or "{}")
    assert waiting["step"] == "queued" and waiting["attempts"] == 0, waiting
    assert bridge.request_counts().get("startMessaging") == 1

    finals = bridge.wait_final(first, second, timeout=20)
    assert {m["status"] for m in finals.values()} == {"delivered"}, finals
    posts = [e for e in bridge.ucwa_requests() if e["kind"] == "startMessaging"]
    assert len(posts) == 2
    assert posts[1]["time"] >= posts[0]["time"] + posts[0]["ms"] / 1000  # one after the other


def test_a_message_whose_worker_was_killed_while_it_waited_for_the_slot_goes_soon(
    make_bridge: MakeBridge,
) -> None:
    """The killed worker held the waiting message's send lock (150 s of TTL by default): the
    next worker takes it over once the dead one's alive key has expired, not the lock."""
    bridge = make_bridge(env={"BRIDGE_WORKER_RUNNERS": "2"})
    add_people(bridge)
    wait_for(lambda: len(runners_of(bridge)) == 2, 15, "two RQ workers", bridge.logs)
    first, waiting = one_out_one_waiting(bridge, 3000, "out when killed", "waited when killed")
    lock_ttl_ms = bridge.redis().pttl(f"lock:send:{waiting}")
    bridge.procs["worker"][0].kill()
    killed = time.monotonic()
    bridge.start_worker()

    finals = bridge.wait_final(waiting, timeout=60)
    took = time.monotonic() - killed
    assert finals[waiting]["status"] == "delivered", finals
    assert bridge.texts(PEOPLE[1]) == ["waited when killed"]
    assert took < 40 < lock_ttl_ms / 1000, (took, lock_ttl_ms)
    assert "took over the send lock of a worker that is gone" in bridge.logs()
    # The one that was out: UCWA acted on it; it is never sent again.
    assert bridge.wait_final(first, timeout=30)[first]["status"] in ("delivered", "failed")
    assert bridge.texts(PEOPLE[0]) == ["out when killed"]
    print(f"the waiting message was delivered {took:.1f}s after its worker was killed")


def test_a_second_signal_stops_every_runner_cold(make_bridge: MakeBridge) -> None:
    """Cold means now for every runner: the one whose POST is out abandons it (whichever thread
    it runs in), the one waiting for the slot never claims, and a new worker sends each once."""
    bridge = make_bridge(env={"BRIDGE_WORKER_RUNNERS": "2", "BRIDGE_AMBIGUITY_GRACE_S": "10"})
    add_people(bridge)
    wait_for(lambda: len(runners_of(bridge)) == 2, 15, "two RQ workers", bridge.logs)
    out, waiting = one_out_one_waiting(bridge, 6000, "cut off cold", "waited, stopped cold")
    worker = bridge.procs["worker"][0]
    worker.send_signal(signal.SIGTERM)  # warm: would wait for both jobs
    time.sleep(1.2)  # RQ ignores a second signal within 1 s of the first
    worker.send_signal(signal.SIGINT)
    started = time.monotonic()
    code = worker.wait(timeout=20)
    took = time.monotonic() - started
    assert code == 0, bridge.logs()
    assert took < 3, took  # the POST out answers 6 s after it reached UCWA
    records = {m: json.loads(bridge.redis().get(f"msg:{m}") or "{}") for m in (out, waiting)}
    assert records[out]["step"] == "posting_cold", records  # cut off mid-POST
    assert records[waiting]["step"] == "queued", records  # never claimed
    assert bridge.request_counts().get("startMessaging") == 1

    bridge.start_worker()
    finals = bridge.wait_final(out, waiting, timeout=60)
    assert finals[waiting]["status"] == "delivered", finals
    assert bridge.texts(PEOPLE[1]) == ["waited, stopped cold"]
    assert bridge.texts(PEOPLE[0]) == ["cut off cold"]  # UCWA acted on it; never sent again
    print(f"two runners stopped cold {took:.1f}s after the second signal")

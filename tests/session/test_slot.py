"""The UCWA slot a worker's job runners share: reentrant, one holder at a time, and a holder that
gives it back to a waiting runner steps aside until that runner's request is written (or for
at most ``step_aside_s``), never when nobody waits. Threads only, then through the transport
against the simulator's HTTP layer (the ``written`` signal comes from the socket write)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from bridge.session.bootstrap import Application, Bootstrap
from bridge.session.client import UcwaClient
from bridge.session.slot import UcwaSlot
from bridge.session.transport import UcwaTransport
from bridge.ucwa.auth import Credentials
from tests.session.conftest import BOT, PASSWORD
from ucwasim import Simulator

LONG_S = 5.0  # a step aside that lasts this long was not ended by the waiting runner


def waiter(slot: UcwaSlot, then: Callable[[], None], events: list[str]) -> threading.Thread:
    """A runner that waits for the slot, says when it has it, runs ``then`` and gives it back."""

    def run() -> None:
        with slot:
            events.append("waiter has it")
            then()
            events.append("waiter done")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while slot._waiting == 0:  # it blocks in acquire
        assert time.monotonic() < deadline, "the waiter never waited"
        time.sleep(0.001)
    return thread


def timed_release(slot: UcwaSlot, events: list[str]) -> float:
    started = time.monotonic()
    slot.release()
    events.append("holder back")
    return time.monotonic() - started


def test_it_is_reentrant_and_held_by_one_thread_at_a_time() -> None:
    slot = UcwaSlot(step_aside_s=LONG_S)
    slot.acquire()
    slot.acquire()  # the transport takes it again inside a send's hold
    taken = threading.Event()
    other = threading.Thread(target=lambda: (slot.acquire(), taken.set(), slot.release()))
    other.start()
    slot.release()
    assert not taken.wait(0.2)  # still held once
    slot.release()
    assert taken.wait(5)
    other.join(5)


def test_a_release_with_nobody_waiting_does_not_wait() -> None:
    slot = UcwaSlot(step_aside_s=LONG_S)
    slot.acquire()
    assert timed_release(slot, []) < 1


def test_the_holder_steps_aside_until_the_waiting_runner_has_written_its_request() -> None:
    slot = UcwaSlot(step_aside_s=LONG_S)
    events: list[str] = []

    def write_later() -> None:
        time.sleep(0.2)  # its claim's round trip, say
        events.append("waiter wrote")
        slot.written()
        time.sleep(0.3)  # its answer on the way: the holder is back meanwhile

    slot.acquire()
    thread = waiter(slot, write_later, events)
    took = timed_release(slot, events)
    thread.join(5)
    assert events == ["waiter has it", "waiter wrote", "holder back", "waiter done"]
    assert 0.15 < took < LONG_S - 1, took


def test_a_waiting_runner_that_gives_the_slot_back_unused_ends_the_step_aside() -> None:
    """A runner whose claim found the message taken stands down without a request."""
    slot = UcwaSlot(step_aside_s=LONG_S)
    events: list[str] = []
    slot.acquire()
    thread = waiter(slot, lambda: time.sleep(0.1), events)
    took = timed_release(slot, events)
    thread.join(5)
    assert events == ["waiter has it", "waiter done", "holder back"]
    assert took < LONG_S - 1, took


def test_a_step_aside_lasts_step_aside_s_at_most() -> None:
    slot = UcwaSlot(step_aside_s=0.3)
    events: list[str] = []
    slot.acquire()
    thread = waiter(slot, lambda: time.sleep(2), events)
    took = timed_release(slot, events)
    thread.join(5)
    assert events == ["waiter has it", "holder back", "waiter done"]
    assert 0.25 < took < 1.5, took


def test_an_inner_release_never_steps_aside() -> None:
    slot = UcwaSlot(step_aside_s=LONG_S)
    events: list[str] = []
    slot.acquire()
    slot.acquire()
    thread = waiter(slot, lambda: None, events)
    assert timed_release(slot, events) < 1  # still held: nothing to hand over
    assert events == ["holder back"]
    slot.release()
    thread.join(5)


def test_once_closed_a_runner_that_gets_the_slot_anew_never_returns_with_it() -> None:
    """A cold stop: the holder's own exchanges go on, nobody starts a new one."""
    closed = threading.Event()
    slot = UcwaSlot(step_aside_s=0.01, closed=closed)
    slot.acquire()
    got = threading.Event()
    other = threading.Thread(target=lambda: (slot.acquire(), got.set()), daemon=True)
    other.start()
    closed.set()
    slot.acquire()  # the holder, again (its transport's exchange)
    slot.release()
    slot.release()
    assert not got.wait(0.5)


# -- through the transport -----------------------------------------------------------------------


def signed_in(sim: Simulator, slot: UcwaSlot) -> tuple[UcwaClient, Application]:
    client = UcwaClient(Credentials(BOT, PASSWORD), UcwaTransport(slot=slot))
    app = Bootstrap(client, BOT, sim.discovery_url).run()
    client.base_url = app.base_url
    return client, app


class Recording(UcwaSlot):
    """Notes when each request was written."""

    def __init__(self, step_aside_s: float = LONG_S) -> None:
        super().__init__(step_aside_s)
        self.writes: list[float] = []

    def written(self) -> None:
        self.writes.append(time.monotonic())
        super().written()


def test_the_transport_says_when_each_request_is_written(sim: Simulator) -> None:
    slot = Recording()
    client, app = signed_in(sim, slot)
    before = len(slot.writes)
    assert before >= 4  # discovery, the grant, the application: each said so
    for _ in range(3):
        client.get_json(app.href, kind="application")
    assert len(slot.writes) == before + 3


def test_a_runner_that_got_its_answer_waits_until_the_next_runners_request_is_out(
    sim: Simulator,
) -> None:
    """Two runners through one transport: the first's hold ends once the second's GET is
    written, not at once and not at the step aside's limit."""
    slot = Recording()
    client, app = signed_in(sim, slot)
    events: list[str] = []

    def second_request() -> None:
        time.sleep(0.2)  # its claim's round trip, say
        client.get_json(app.href, kind="application")

    slot.acquire()
    client.get_json(app.href, kind="application")  # the first runner's own exchange
    thread = waiter(slot, second_request, events)
    started = time.monotonic()
    slot.release()
    back = time.monotonic()
    thread.join(5)
    assert events == ["waiter has it", "waiter done"]
    second_written = slot.writes[-1]
    assert started + 0.15 < second_written <= back < started + LONG_S - 1

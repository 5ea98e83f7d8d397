"""The deadline watchdog's heap holds what is live, not everything armed within the longest
timeout: a job's timeout (120 s for a send) is cancelled as its job ends, minutes before it
would reach the top of the heap."""

from __future__ import annotations

import threading
import time

from bridge.net.deadline import COMPACT_FROM, _Watchdog


class Expiry:
    def __init__(self, seconds: float, fired: list[Expiry] | None = None) -> None:
        self.expires_at = time.monotonic() + seconds
        self.done = False
        self.fired = fired

    def fire(self) -> None:
        self.done = True
        if self.fired is not None:
            self.fired.append(self)


def test_finished_entries_do_not_pile_up() -> None:
    watchdog = _Watchdog()
    live = [Expiry(600) for _ in range(100)]
    for expiry in live:
        watchdog.arm(expiry)
    most = 0
    for _ in range(20_000):  # jobs: armed with a long timeout, done a moment later
        job = Expiry(120)
        watchdog.arm(job)
        job.done = True
        most = max(most, len(watchdog))
    assert most <= max(COMPACT_FROM, 2 * len(live)) + 1
    assert len(watchdog) >= len(live)  # the live ones are all kept


def test_what_is_live_still_fires_in_order_and_nothing_finished_does() -> None:
    watchdog = _Watchdog()
    fired: list[Expiry] = []
    live = [Expiry(0.05 + 0.01 * (n % 20), fired) for n in range(60)]
    finished = []
    for index, expiry in enumerate(live):
        watchdog.arm(expiry)
        for _ in range(50):  # sweeps run among them
            job = Expiry(0.01 * (index % 7), fired)
            watchdog.arm(job)
            job.done = True
            finished.append(job)
    deadline = time.monotonic() + 5
    while len(fired) < len(live) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(map(id, fired)) == sorted(map(id, live))
    times = [expiry.expires_at for expiry in fired]
    assert times == sorted(times)
    assert not any(job in fired for job in finished)


def test_arming_from_several_threads_keeps_every_live_entry() -> None:
    watchdog = _Watchdog()
    fired: list[Expiry] = []
    live: list[Expiry] = []
    lock = threading.Lock()

    def runner() -> None:
        for n in range(2_000):
            job = Expiry(120)
            watchdog.arm(job)
            job.done = True
            if n % 100 == 0:
                expiry = Expiry(0.2, fired)
                with lock:
                    live.append(expiry)
                watchdog.arm(expiry)

    threads = [threading.Thread(target=runner) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    deadline = time.monotonic() + 5
    while len(fired) < len(live) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(live) == 80 and sorted(map(id, fired)) == sorted(map(id, live))
    assert len(watchdog) <= COMPACT_FROM + 1

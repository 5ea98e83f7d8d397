"""The benchmarks' CPU figures resolve a few milliseconds: a phase of a quick run must not be
rounded to the 10 ms clock tick (a 6-message burst's worker CPU read as 0 once)."""

from __future__ import annotations

import itertools
import subprocess
import sys

from bench._common import cpu_s

BURN = """
import sys, time
print("ready", flush=True)
sys.stdin.readline()
start = time.thread_time()
while time.thread_time() - start < 0.004:
    pass
print("done", flush=True)
sys.stdin.readline()
"""


def test_a_few_milliseconds_of_cpu_are_counted_as_such() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", BURN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "ready"  # started: only the burn is left
        before = cpu_s(child.pid)
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "done"
        spent_ms = (cpu_s(child.pid) - before) * 1000
    finally:
        child.stdin.write("end\n")
        child.stdin.flush()
        child.wait(timeout=10)
    assert 3.5 <= spent_ms <= 9.0, spent_ms


def test_a_process_that_is_gone_has_no_cpu() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=10)
    assert cpu_s(child.pid) == 0.0


CHURN = """
import sys, threading, time
def burn():
    start = time.thread_time()
    while time.thread_time() - start < 0.002:
        pass
print("ready", flush=True)
end = time.monotonic() + 1.0
while time.monotonic() < end:
    threads = [threading.Thread(target=burn) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
"""


def test_threads_that_come_and_go_never_take_cpu_back() -> None:
    """A role's threads start and end while a phase is measured: what they used stays counted,
    so a reading never goes down (a phase once read -0.25 ms per message)."""
    child = subprocess.Popen([sys.executable, "-c", CHURN], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "ready"
        readings = []
        while child.poll() is None:
            readings.append(cpu_s(child.pid))
    finally:
        child.wait(timeout=10)
    assert len(readings) > 100
    assert all(b >= a for a, b in itertools.pairwise(readings)), "went down"
    assert readings[-1] - readings[0] > 0.1

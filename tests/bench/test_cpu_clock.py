"""The benchmarks' CPU figures resolve a few milliseconds: a phase of a quick run must not be
rounded to the 10 ms clock tick (a 6-message burst's worker CPU read as 0 once)."""

from __future__ import annotations

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

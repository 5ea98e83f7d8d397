"""Where a worker's time goes between two send POSTs, step by step, measured in the worker.

``install`` (in a worker process, through ``bench/_trace_site``) wraps the functions of one send
job's way, from RQ taking the job to RQ forgetting it, so that each call's start and end are
stamped with ``time.perf_counter`` and with the thread's CPU clock (``time.thread_time``): each
step shows how much of it was the worker's own CPU and how much a wait (Redis, the simulator, a
core busy with another process, or, with several job runners, the worker's UCWA request held
by another runner). Each stamp names its thread, so each runner's jobs are cut apart. A thread
writes the stamps to ``<dir>/trace-<pid>.txt`` every
half second. ``analyse`` cuts them into jobs (each starts as the worker asks RQ for the
next job) and averages, over the send jobs, the time from each stamp to the next: the POST
itself, the round trips around it, and the Python in between. A stamp costs about a
microsecond. The wrapped names are the ones of this build: a name that is gone ends the tracing
thread with a traceback in the worker's log, and the benchmark prints no traced steps (which
``tests/bench/test_bench_smoke.py`` looks for).
"""

from __future__ import annotations

import itertools
import os
import statistics
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

# (module, owner, attribute, label): what one send job passes through, in order.
JOB_STEPS = (
    ("workers.rq_worker", "BridgeQueue", "dequeue_any", "take"),
    ("workers.rq_worker", "BridgeWorker", "prepare_execution", "prepare_execution"),
    ("workers.rq_worker", "BridgeWorker", "prepare_job_execution", "prepare_job"),
    ("bridge.outbound.sender", "Sender", "run", "job"),
    ("bridge.outbound.sender", None, "read_and_watch", "line_head"),
    ("bridge.outbound.sender", "Sender", "_claim", "claim"),
    ("bridge.session.client", "UcwaClient", "request", "post"),
    ("bridge.outbound.sender", "Sender", "_mark_answered", "mark"),
    ("workers.rq_worker", "BridgeWorker", "handle_job_success", "forget"),
)
# The worker's UCWA slot changing hands between its job runners (``handover``).
SLOT_STEPS = (
    ("bridge.outbound.sender", "_SlotHold", "take", "slot_take"),
    ("bridge.outbound.sender", "_SlotHold", "release", "slot_release"),
    ("bridge.outbound.sender", "MessageStore", "update_then_watch", "claim_write"),
    ("bridge.net.deadline", "DeadlineHTTPConnection", "request", "http_write"),
    ("urllib3.connection", "HTTPConnection", "getresponse", "http_answer"),
)
STEPS = JOB_STEPS + SLOT_STEPS
JOB_LABELS = frozenset(label for _, _, _, label in JOB_STEPS)
Stamp = tuple[str, str, float, float]  # label, b(egin) or e(nd), perf_counter, thread CPU
FIRST = "take"  # a job's first stamp
SENT = "post"  # a send job's stamp


def install(folder: str) -> None:
    """Wrap the steps once the worker has imported them, then write stamps every half second."""
    stamps: list[tuple[str, str, float, float, int]] = []
    path = Path(folder) / f"trace-{os.getpid()}.txt"

    def stamped(label: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            thread = threading.get_ident()
            stamps.append((label, "b", time.perf_counter(), time.thread_time(), thread))
            try:
                return call(*args, **kwargs)
            finally:
                stamps.append((label, "e", time.perf_counter(), time.thread_time(), thread))

        return wrapper

    def wrap_all() -> None:
        for module_name, owner_name, attribute, label in STEPS:
            module = sys.modules[module_name]
            owner: Any = getattr(module, owner_name) if owner_name else module
            found = owner.__dict__[attribute]
            if isinstance(found, classmethod):
                setattr(owner, attribute, classmethod(stamped(label, found.__func__)))
            else:
                setattr(owner, attribute, stamped(label, found))

    def run() -> None:
        wanted = {module for module, _, _, _ in STEPS}
        while not wanted <= sys.modules.keys():
            time.sleep(0.01)
        time.sleep(0.05)  # the modules finish importing
        wrap_all()
        written = 0
        while True:
            time.sleep(0.5)
            if len(stamps) == written:
                continue
            written = len(stamps)
            lines = "".join(
                f"{label} {edge} {at:.7f} {cpu:.7f} {thread}\n"
                for label, edge, at, cpu, thread in stamps[:written]
            )
            path.write_text(lines)

    threading.Thread(target=run, name="bench-job-trace", daemon=True).start()


def stamp_counts(folder: str) -> dict[str, int]:
    """How many stamps each worker has written so far: ``analyse`` starts after them."""
    return {p.name: len(p.read_text().splitlines()) for p in Path(folder).glob("trace-*.txt")}


def analyse(
    folder: str, since: dict[str, int]
) -> tuple[int, float, list[tuple[str, float, float]]]:
    """(send jobs, mean ms from one job's start to the next's, [(from → to, mean ms per job,
    mean CPU ms of the worker's thread per job)]), the steps in the order of a job."""
    spans: dict[str, list[float]] = defaultdict(list)
    cpu: dict[str, list[float]] = defaultdict(list)
    order: dict[str, int] = {}
    cycles: list[float] = []
    for trace in sorted(Path(folder).glob("trace-*.txt")):
        rows = trace.read_text().splitlines()[since.get(trace.name, 0) :]
        by_thread: dict[str, list[Stamp]] = defaultdict(list)
        for label, edge, at, used, thread in map(str.split, rows):
            if label in JOB_LABELS:
                by_thread[thread].append((label, edge, float(at), float(used)))
        for stamps in by_thread.values():  # a job runner's jobs, one after another
            jobs: list[list[Stamp]] = []
            for stamp in stamps:
                if stamp[0] == FIRST and stamp[1] == "b":
                    jobs.append([])
                if jobs:  # stamps before the first job's start belong to a job begun earlier
                    jobs[-1].append(stamp)
            for job, following in itertools.pairwise(jobs):
                if not any(stamp[0] == SENT for stamp in job):
                    continue
                cycles.append((following[0][2] - job[0][2]) * 1000)
                walk = [*job, following[0]]
                for position, (a, b) in enumerate(itertools.pairwise(walk)):
                    name = f"{a[0]} {'start' if a[1] == 'b' else 'end'} → {b[0]} " + (
                        "start" if b[1] == "b" else "end"
                    )
                    spans[name].append((b[2] - a[2]) * 1000)
                    cpu[name].append((b[3] - a[3]) * 1000)
                    order.setdefault(name, position)
    if not cycles:
        return 0, 0.0, []
    steps = [
        (name, sum(values) / len(cycles), sum(cpu[name]) / len(cycles))
        for name, values in spans.items()
    ]
    steps.sort(key=lambda step: order[step[0]])
    return len(cycles), statistics.mean(cycles), steps


# The slot's way from one runner's answer to the next runner's request on the wire, in order:
# (label, edge, name of the span that ends there).
_HANDOVER = (
    ("http_answer", "e", None),  # the holder has its POST's answer (status and headers)
    ("slot_release", "b", "the holder reads the rest and gives the slot back"),
    ("slot_take", "e", "the next runner has the slot"),
    ("claim_write", "e", "its claim's round trip"),
    ("http_write", "b", "it prepares its POST"),
    ("http_write", "e", "it writes its POST"),
)


def handover(folder: str, since: dict[str, int]) -> tuple[int, list[tuple[str, float, float]]]:
    """(hand-overs, [(span, mean ms, median ms)]): the time a worker's UCWA request stands idle
    between two send POSTs when the next runner was already waiting for the slot, step by step.
    Each send's stamps are read in the order of ``_HANDOVER`` from the slot's take; a send that
    went without them (it stood down, or was not a POST) is left out."""
    spans: dict[str, list[float]] = defaultdict(list)
    count = 0
    for trace in sorted(Path(folder).glob("trace-*.txt")):
        rows = trace.read_text().splitlines()[since.get(trace.name, 0) :]
        stamps = sorted(
            (float(at), label, edge, thread)
            for label, edge, at, _, thread in map(str.split, rows)
            if label not in JOB_LABELS or label == FIRST
        )
        sends: list[dict[str, float]] = []
        open_sends: dict[str, dict[str, float]] = {}
        for at, label, edge, thread in stamps:
            if label == FIRST and edge == "b":
                open_sends.pop(thread, None)
                continue
            send = open_sends.setdefault(thread, {})
            key = f"{label} {edge}"
            if label == "slot_take" and edge == "b" and "asked" not in send:
                send["asked"] = at
            elif key == "slot_take e" and key not in send:
                send[key] = at
            elif "slot_take e" in send and key not in send:
                if key == "slot_release b" and "http_answer e" not in send:
                    open_sends.pop(thread)  # given back without a POST's answer
                    continue
                send[key] = at
                if key == "slot_release b":
                    sends.append(open_sends.pop(thread))
        sends.sort(key=lambda send: send["slot_take e"])
        for held, following in itertools.pairwise(sends):
            if following["asked"] >= held["slot_release b"]:
                continue  # the next runner was not waiting: the slot was idle for want of work
            if not all(f"{label} {edge}" in following for label, edge, _ in _HANDOVER[2:]):
                continue
            count += 1
            walk = [held["http_answer e"], held["slot_release b"]]
            walk += [following[f"{label} {edge}"] for label, edge, _ in _HANDOVER[2:]]
            for (_, _, name), (a, b) in zip(_HANDOVER[1:], itertools.pairwise(walk), strict=True):
                spans[name].append((b - a) * 1000)
            spans["in all"].append((walk[-1] - walk[0]) * 1000)
    return count, [
        (name, statistics.mean(values), statistics.median(values)) for name, values in spans.items()
    ]

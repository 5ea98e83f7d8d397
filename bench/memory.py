"""Resident memory (VmRSS) of each bridge process: idle, then after each round of messages.

The whole bridge runs against the simulator: api (gunicorn master and workers), one RQ worker
(and any process it starts: none since its RQ scheduler is a thread, the forked scheduler child
of earlier builds otherwise, under "rq scheduler"), the poller. 10,000 messages by default, in
4 rounds; each figure is read from /proc/<pid>/status in this run. The headline is the ratio
after/idle per role; the growth per round tells warm-up (the first round only) from a leak
(every round).

    python -m bench.memory [--quick] [--messages N] [--rounds R]
"""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor

from bench._common import (
    BOT,
    BOT_PASSWORD,
    TEXT_100,
    ApiClient,
    BenchError,
    Child,
    Report,
    Stack,
    base_parser,
    children,
    pss_mb,
    ratio,
    rss_mb,
    run_main,
    say,
)

RECIPIENTS = 20
CHUNK = 250
GROWTH_LIMIT_MB = 1.0
PSS_KEYS = ("bridge PSS", "api (master + workers) PSS", "worker (+ rq scheduler) PSS", "poller PSS")
TIME_SCALE = 0.05
ROLES = ("api master", "api workers", "worker", "rq scheduler", "poller")
BRIDGE_ENV = {
    "BRIDGE_KEEPALIVE_S": "10",  # the simulator's activity expiry is 45 s at this time scale
    # Watchdog checks (one scheduled RQ job per message) would otherwise run inside the rounds.
    "BRIDGE_INVITATION_TIMEOUT_S": "3600",
    "BRIDGE_MESSAGE_TIMEOUT_S": "3600",
}


def recipients() -> list[str]:
    return [f"sip:user{i:02d}@contoso.com" for i in range(RECIPIENTS)]


def snapshot(api: Child, worker: Child, poller: Child, stack: Stack) -> dict[str, float]:
    workers = children(api.pid)
    scheduler = children(worker.pid)
    sim = next(c for c in stack.children if c.name == "sim")
    bridge = [api.pid, *workers, worker.pid, *scheduler, poller.pid]
    return {
        "bridge PSS": sum(pss_mb(pid) for pid in bridge),
        "api (master + workers) PSS": sum(pss_mb(pid) for pid in [api.pid, *workers]),
        "worker (+ rq scheduler) PSS": sum(pss_mb(pid) for pid in [worker.pid, *scheduler]),
        "poller PSS": pss_mb(poller.pid),
        "api master": rss_mb(api.pid),
        "api workers": sum(rss_mb(pid) for pid in workers),
        "worker": rss_mb(worker.pid),
        "rq scheduler": sum(rss_mb(pid) for pid in scheduler),
        "poller": rss_mb(poller.pid),
        "simulator": rss_mb(sim.pid),
        "redis-server": rss_mb(stack.redis_pid),
    }


def send(stack: Stack, client: ApiClient, count: int) -> None:
    """``count`` messages in chunks, each drained before the next: a steady flow, not a backlog."""
    for first in range(0, count, CHUNK):
        size = min(CHUNK, count - first)
        targets = [recipients()[i % RECIPIENTS] for i in range(first, first + size)]
        with ThreadPoolExecutor(4) as pool:
            ids = list(pool.map(lambda to: client.post_message(to, TEXT_100), targets))
        stack.wait_lines_drained(targets, timeout=120)
        for message_id in ids[-RECIPIENTS:]:
            status = client.message(message_id)["status"]
            if status != "delivered":
                raise BenchError(f"message {message_id} ended {status}")


def main() -> Report:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--messages", type=int, help="messages in all (default 10000)")
    parser.add_argument("--rounds", type=int, help="rounds the messages are split into")
    args = parser.parse_args()
    total = args.messages or (200 if args.quick else 10_000)
    rounds = max(2, args.rounds or (2 if args.quick else 4))
    per_round = total // rounds
    total = per_round * rounds
    report = Report("memory: RSS per role, idle and after each round of messages")
    with Stack("memory", keep_logs=args.keep_logs) as stack:
        say("starting redis, the simulator, api (2 gunicorn workers), poller and one worker…")
        stack.start_redis()
        users = [{"sip": BOT, "password": BOT_PASSWORD}]
        users += [{"sip": sip, "password": "pw"} for sip in recipients()]
        stack.start_sim(users, time_scale=TIME_SCALE)
        stack.env_extra.update(BRIDGE_ENV)
        api = stack.start_api(workers=2)
        poller = stack.start_poller()
        worker = stack.start_worker()
        client = ApiClient(stack.api_url)
        time.sleep(1.0)
        snaps = [snapshot(api, worker, poller, stack)]
        started = time.monotonic()
        for round_no in range(rounds):
            say(f"round {round_no + 1}/{rounds}: {per_round} messages to {RECIPIENTS} recipients…")
            send(stack, client, per_round)
            time.sleep(0.5)
            snaps.append(snapshot(api, worker, poller, stack))
        seconds = time.monotonic() - started
        gunicorn_workers = len(children(api.pid))

    idle, last = snaps[0], snaps[-1]
    totals = [sum(snap[role] for role in ROLES) for snap in snaps]
    growth = [after - before for before, after in itertools.pairwise(totals)]
    report.ratio(
        f"bridge RSS after {total} messages / idle",
        ratio(totals[-1], totals[0]),
        f"{totals[-1]:.1f} vs {totals[0]:.1f} MB (all bridge processes)",
    )
    for role in ROLES:
        if not idle[role] and not last[role]:
            continue  # no such process (the worker starts none)
        report.ratio(
            f"{role} RSS after {total} / idle",
            ratio(last[role], idle[role]),
            f"{last[role]:.1f} vs {idle[role]:.1f} MB",
        )
    later = growth[1:]
    report.target(
        f"no growth after round 1 (each later round <= {GROWTH_LIMIT_MB:.0f} MB)",
        all(g <= GROWTH_LIMIT_MB for g in later),
        "bridge growth per round " + ", ".join(f"{g:+.1f}" for g in growth) + " MB",
    )
    marks = ", ".join(f"+{per_round * i}" for i in range(1, rounds + 1))
    for role in (*ROLES, "simulator", "redis-server"):
        report.raw(
            f"{role} RSS MB: idle, {marks}",
            ", ".join(f"{snap[role]:.1f}" for snap in snaps),
        )
    for role in ROLES:
        steps = [after[role] - before[role] for before, after in itertools.pairwise(snaps)]
        report.raw(f"{role} growth per round MB", ", ".join(f"{g:+.1f}" for g in steps))
    for key in PSS_KEYS:
        report.raw(
            f"{key} MB: idle, {marks}",
            ", ".join(f"{snap[key]:.1f}" for snap in snaps),
        )
    report.raw("bridge growth per round", ", ".join(f"{g:+.1f} MB" for g in growth))
    report.raw("sending took", f"{seconds:.0f} s ({total / seconds:.0f} msg/s)")
    report.note(
        f"{gunicorn_workers} gunicorn workers (summed; RSS counts pages shared with the master "
        f"in each, PSS splits them), {RECIPIENTS} recipients, chunks of {CHUNK} messages, VmRSS "
        "and Pss from /proc; the simulator and redis-server are shown for scale, not counted as "
        "bridge"
    )
    return report


if __name__ == "__main__":
    raise SystemExit(run_main(main))

"""Resident memory (VmRSS) of each bridge process: idle, then after two batches of N messages.

The whole bridge runs against the simulator: api (gunicorn master and workers), one RQ worker
(and the scheduler process it forks), the poller. Each figure is read from /proc/<pid>/status
in this run; the headline is the growth ratio after/idle per role. A second batch tells
warm-up (growth in the first batch only) from a leak (growth in both).

    python -m bench.memory [--quick] [--messages N]
"""

from __future__ import annotations

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
TIME_SCALE = 0.05
ROLES = ("api master", "api workers", "worker", "rq scheduler", "poller")
BRIDGE_ENV = {
    "BRIDGE_KEEPALIVE_S": "10",  # the simulator's activity expiry is 45 s at this time scale
    "BRIDGE_INVITATION_TIMEOUT_S": "300",
    "BRIDGE_MESSAGE_TIMEOUT_S": "300",
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
    targets = [recipients()[i % RECIPIENTS] for i in range(count)]
    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(lambda to: client.post_message(to, TEXT_100), targets))
    stack.wait_lines_drained(targets, timeout=120)
    for message_id in ids[-RECIPIENTS:]:
        status = client.message(message_id)["status"]
        if status != "delivered":
            raise BenchError(f"message {message_id} ended {status}")


def main() -> Report:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--messages", type=int, help="messages per batch (two batches)")
    args = parser.parse_args()
    count = args.messages or (100 if args.quick else 500)
    report = Report("memory: RSS per role, idle and after sending")
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
        idle = snapshot(api, worker, poller, stack)
        say(f"sending {count} messages to {RECIPIENTS} recipients…")
        started = time.monotonic()
        send(stack, client, count)
        first_s = time.monotonic() - started
        time.sleep(0.5)
        after_one = snapshot(api, worker, poller, stack)
        say(f"sending {count} more…")
        send(stack, client, count)
        time.sleep(0.5)
        after_two = snapshot(api, worker, poller, stack)
        gunicorn_workers = len(children(api.pid))

    total = {
        name: sum(snap[role] for role in ROLES)
        for name, snap in (("idle", idle), ("one", after_one), ("two", after_two))
    }
    report.ratio(
        f"bridge RSS after {2 * count} messages / idle",
        ratio(total["two"], total["idle"]),
        f"{total['two']:.1f} vs {total['idle']:.1f} MB (all bridge processes)",
    )
    for role in ROLES:
        report.ratio(
            f"{role} RSS after {2 * count} / idle",
            ratio(after_two[role], idle[role]),
            f"{after_two[role]:.1f} vs {idle[role]:.1f} MB",
        )
    growth_one = total["one"] - total["idle"]
    growth_two = total["two"] - total["one"]
    for role in (*ROLES, "simulator", "redis-server"):
        report.raw(
            f"{role} RSS MB: idle, +{count}, +{2 * count}",
            f"{idle[role]:.1f}, {after_one[role]:.1f}, {after_two[role]:.1f}",
        )
    for key in (
        "bridge PSS",
        "api (master + workers) PSS",
        "worker (+ rq scheduler) PSS",
        "poller PSS",
    ):
        report.raw(
            f"{key} MB: idle, +{count}, +{2 * count}",
            f"{idle[key]:.1f}, {after_one[key]:.1f}, {after_two[key]:.1f}",
        )
    report.raw(
        "bridge growth, first batch vs second batch",
        f"{growth_one:+.1f} MB vs {growth_two:+.1f} MB",
    )
    report.raw("first batch took", f"{first_s:.1f} s ({count / first_s:.0f} msg/s)")
    report.note(
        f"{gunicorn_workers} gunicorn workers (summed; RSS counts pages shared with the master "
        f"in each, PSS splits them), {RECIPIENTS} recipients, VmRSS and Pss from /proc; the "
        "simulator and redis-server are shown for scale, not counted as bridge"
    )
    return report


if __name__ == "__main__":
    raise SystemExit(run_main(main))

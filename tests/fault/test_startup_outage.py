"""Redis going away while a role starts, at any of the commands it sends then: the role waits and
resumes by itself, as it does for an outage later on, instead of exiting.

RQ's worker names its connection and lists the clients as it is built, the scheduler takes its
locks, the poller reads its session and takes its lease: each is a moment where an error that
escaped would end the process (a worker died this way when Redis was killed a second after it
started). The role's own process talks to Redis through a proxy that, at the first write holding
the named command, lets it through, drops the reply and every connection, and refuses new ones for
a while, as a Redis killed then does; the other roles use Redis directly. Each command is cut in
a fresh process of the role, one after the other, and after each the role must still run and a
message must be delivered.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.e2e.conftest import ALICE, FINAL, Bridge, MakeBridge, wait_for
from tests.redis_cutting_proxy import CuttingProxy

# The commands each role's process sends in its first seconds, in the order they first appear
# (recorded through a counting proxy), a word of each (SETNAME for CLIENT SETNAME); a write
# holding several is cut at the first named.
WORKER_STARTUP = (
    "HELLO",
    "SETNAME",  # CLIENT SETNAME, as RQ's worker is built (and CLIENT LIST after it)
    "LIST",
    "SET",
    "EXISTS",
    "MULTI",
    "SUBSCRIBE",
    "EVALSHA",
    "ZREMRANGEBYSCORE",
    "SMEMBERS",
    "BLPOP",
)
POLLER_STARTUP = (
    "HELLO",
    "CLIENT",
    "EVALSHA",
    "MGET",
    "HGETALL",
    "WATCH",
    "MULTI",
    "LRANGE",
    "SCAN",
)


def holds(command: str) -> object:
    marker = f"${len(command)}\r\n{command}\r\n".encode()
    return lambda data: marker in data


@pytest.fixture()
def proxy(redis_url: str) -> Iterator[CuttingProxy]:
    port = urlsplit(redis_url).port
    assert port is not None
    cutting = CuttingProxy(port, down_s=1.0, every=True)
    yield cutting
    cutting.close()


def cut_at_each(bridge: Bridge, proxy: CuttingProxy, role: str, commands: tuple[str, ...]) -> None:
    for number, command in enumerate(commands):
        proxy.cut_when(holds(command))  # type: ignore[arg-type]
        process = bridge.spawn(role, env={"BRIDGE_REDIS_URL": proxy.url()})
        wait_for(lambda n=number: proxy.cuts > n, 30, f"the cut at {command}", bridge.logs)
        message_id = bridge.send(ALICE, f"after a cut at {command}")
        wait_for(
            lambda p=process, m=message_id: (
                p.poll() is not None or bridge.message(m)["status"] in FINAL
            ),
            60,
            f"the message sent after the cut at {command}",
            lambda m=message_id: f"{bridge.message(m)}\n{bridge.jobs()}\n{bridge.logs()}",
        )
        assert process.poll() is None, f"cut at {command}\n{bridge.exit_report(process)}"
        assert bridge.message(message_id)["status"] == "delivered", command
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0, f"cut at {command}\n{bridge.exit_report(process)}"
        bridge.procs[role].remove(process)


STARTUP = {"worker": WORKER_STARTUP, "poller": POLLER_STARTUP}


@pytest.mark.parametrize("part", [0, 1], ids=["first-half", "second-half"])
@pytest.mark.parametrize("role", ["worker", "poller"])
def test_a_role_outlives_redis_going_away_as_it_starts(
    make_bridge: MakeBridge, proxy: CuttingProxy, role: str, part: int
) -> None:
    bridge = make_bridge(start=False)
    bridge.start_api()
    if role == "worker":
        bridge.start_poller()
    else:
        bridge.start_worker()
    commands = STARTUP[role]
    half = (len(commands) + 1) // 2
    cut_at_each(bridge, proxy, role, commands[half * part : half * (part + 1)])

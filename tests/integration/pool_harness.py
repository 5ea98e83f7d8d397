"""Nine bot accounts on one simulator, served by poller pools: in this process or as real
``ucwa-bridge poller`` subprocesses configured with ``BRIDGE_ACCOUNTS``.

Who serves what is read from Redis: each lease names its holder, the pool member's id.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis

from bridge.config.accounts import Account
from bridge.config.redis_text import text, text_map
from bridge.session.lease import PollerLease
from bridge.session.pool import MEMBERS_KEY
from tests.e2e.conftest import API_KEY, Bridge, wait_for
from ucwasim import SimConfig, Simulator, SimUser

PASSWORD = "Bot-Passw0rd-pool"
BOTS = [f"sip:bot{n}@contoso.com" for n in range(1, 10)]
IDS = [f"a{n}" for n in range(1, 10)]  # a1 is the default account
WRITERS = ["sip:alice@contoso.com", "sip:bob@contoso.com"]

POOL_ENV = {
    "BRIDGE_API_KEYS": API_KEY,
    "BRIDGE_POLLER_LEASE_S": "2",
    "BRIDGE_EVENT_TIMEOUT_S": "180",
    "BRIDGE_KEEPALIVE_S": "2",
    "BRIDGE_SWEEP_S": "1",
    "BRIDGE_BACKOFF_BASE_S": "0.2",
    "BRIDGE_BACKOFF_CAP_S": "2",
    "BRIDGE_RATE_LIMIT": "off",
    "BRIDGE_LOG_LEVEL": "INFO",
}


def sim_config(**overrides: Any) -> SimConfig:
    users = [SimUser(sip, PASSWORD, name=f"Bot {n}") for n, sip in enumerate(BOTS, 1)]
    users += [SimUser(sip, "pw") for sip in WRITERS]
    return SimConfig(users=users, **{"time_scale": 0.05, **overrides})


def accounts(sim: Simulator) -> list[Account]:
    return [
        Account(i, sip, PASSWORD, sim.discovery_url, default=i == IDS[0])
        for i, sip in zip(IDS, BOTS, strict=True)
    ]


def accounts_env(sim: Simulator) -> str:
    return json.dumps(
        [
            {"id": a.id, "username": a.username, "password": a.password, "default": a.default}
            for a in accounts(sim)
        ]
    )


def pool_bridge(
    redis_url: str, workdir: Path, sim: Simulator, env: dict[str, str] | None = None
) -> Bridge:
    """A Bridge whose roles serve the nine accounts (``spawn("poller")`` starts a pool)."""
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("BRIDGE_") or k in ("BRIDGE_UCWA_TLS_VERIFY",)
    }
    environ.update(POOL_ENV)
    environ.update(
        {
            "BRIDGE_REDIS_URL": redis_url,
            "BRIDGE_UCWA_DISCOVERY_URL": sim.discovery_url,
            "BRIDGE_ACCOUNTS": accounts_env(sim),
            **(env or {}),
        }
    )
    return Bridge(redis_url, sim, workdir, environ)


# -- what Redis says ----------------------------------------------------------------------------


def holders(client: redis.Redis) -> dict[str, tuple[str, int] | None]:
    """Each bot's lease: (holder, fence), or None while free."""
    found: dict[str, tuple[str, int] | None] = {}
    for bot in BOTS:
        current = PollerLease.current(client, bot)
        found[bot] = (current.holder, current.fence) if current else None
    return found


def spread(client: redis.Redis) -> Counter[str]:
    """How many leases each member holds."""
    return Counter(h[0] for h in holders(client).values() if h is not None)


def members(client: redis.Redis) -> list[str]:
    return sorted(text(m) for m in client.zrange(MEMBERS_KEY, 0, -1))


def fences(client: redis.Redis) -> dict[str, int]:
    return {bot: int(client.get(f"poller:fence:{bot}") or 0) for bot in BOTS}


def ready(client: redis.Redis, bot: str, fence: int = 0, since: float = 0.0) -> bool:
    """The bot's session is ready under a fence above ``fence`` and, with ``since``, its
    poller has applied an event batch after that moment (epoch seconds)."""
    session = text_map(client.hgetall(f"session:{bot}"))
    if session.get("state") != "ready" or int(session.get("fence") or 0) <= fence:
        return False
    return not since or float(client.get(f"session:{bot}:pulse") or 0) > since


def all_ready(client: redis.Redis) -> bool:
    return all(ready(client, bot) for bot in BOTS)


def wait_spread(
    client: redis.Redis, expected: list[int], timeout: float, bridge: Bridge | None = None
) -> float:
    """Seconds until every account is held and the holdings are ``expected`` (any order)."""
    started = time.monotonic()

    def even() -> bool:
        held = holders(client)
        counts = sorted(spread(client).values(), reverse=True)
        return None not in held.values() and counts == sorted(expected, reverse=True)

    wait_for(even, timeout, f"a spread of {expected}", bridge.logs if bridge else None)
    return time.monotonic() - started


# -- what the simulator says --------------------------------------------------------------------


def applications(sim: Simulator) -> dict[str, list[str]]:
    """Each bot's applications on the simulator."""
    users = sim_call(sim, "GET", "/_sim/users")
    return {u["sip"]: [a["href"] for a in u["applications"]] for u in users if u["sip"] in BOTS}


def replaced_gets(sim: Simulator) -> Counter[str]:
    """Per bot, event GETs answered 409 (PGetReplaced): one per handover at most, unless two
    readers of one account were parked at once (they would replace each other over and over)."""
    log = sim_call(sim, "GET", "/_sim/requests")["requests"]
    return Counter(r["user"] for r in log if r["kind"] == "events" and r["status"] == 409)


def sim_call(sim: Simulator, method: str, path: str, body: Any = None) -> Any:
    import requests

    response = requests.request(method, sim.base_url + path, json=body, timeout=10)
    assert response.status_code < 400, response.text
    return response.json() if response.content else None

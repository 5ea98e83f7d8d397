"""Shared fixtures: a real redis-server for the whole session, flushed per test.

Set REDIS_URL to use an existing server instead of starting one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from bridge.config.embedded_redis import EmbeddedRedis
from tests.processes import alive, descendants

# Figures a test reports (``tests/fault``'s ``report``) travel as this user property of its
# report; here, at the root, the summary collects them in whichever process prints it.
FIGURE_PROPERTY = "fault figure"
_figures: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        _figures.extend(str(v) for k, v in report.user_properties if k == FIGURE_PROPERTY)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _figures:
        terminalreporter.section("fault figures")
        for line in _figures:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    external = os.environ.get("REDIS_URL")
    if external:
        _session_redis.append(external)
        yield external
        return
    server = EmbeddedRedis().start()
    _session_redis.append(server.url)
    try:
        yield server.url
    finally:
        server.close()


# The session Redis's URL, once a test asked for it.
_session_redis: list[str] = []
# How long a test's workers and pollers have to exit after its teardown asked them to.
STRAY_GRACE_S = 20.0


def _roles_on(redis_url: str) -> list[tuple[int, str]]:
    """This process's descendants that are bridge workers or pollers on ``redis_url``."""
    found = []
    for pid in descendants(os.getpid()):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"bridge.cli" not in argv or not alive(pid):
            continue
        role = argv[argv.index(b"bridge.cli") + 1 :][:1]
        if role in ([b"worker"], [b"poller"]) and (
            f"BRIDGE_REDIS_URL={redis_url}".encode() in environ
        ):
            found.append((pid, role[0].decode()))
    return found


@pytest.fixture(autouse=True)
def _no_worker_or_poller_outlives_its_test() -> Iterator[None]:
    """The session's Redis is shared by the tests of this process, one after the other: a
    worker or poller a test left running would take the next tests' jobs, leases and scheduler
    locks. Set up first, so torn down last: after the test's own fixtures stopped what they
    started."""
    yield
    if not _session_redis:
        return
    deadline = time.monotonic() + STRAY_GRACE_S
    while (left := _roles_on(_session_redis[0])) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid, _ in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    if left:
        pytest.fail(f"workers or pollers outlived the test (killed now): {left}")


@pytest.fixture()
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


@pytest.fixture()
def redis_proxy(redis_url: str) -> Iterator[Any]:
    """A counting proxy in front of the session's Redis (``bench/_redis_trips.py``): a client
    made from ``redis_proxy.url(db)`` has its round trips and commands counted on the wire."""
    from bench._redis_trips import CountingProxy

    url = urlsplit(redis_url)
    counting = CountingProxy(url.hostname or "127.0.0.1", url.port or 6379)
    try:
        yield counting
    finally:
        counting.close()

"""Shared fixtures: a real redis-server for the whole session, flushed per test.

Set REDIS_URL to use an existing server instead of starting one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from bridge.config.embedded_redis import EmbeddedRedis

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
        yield external
        return
    server = EmbeddedRedis().start()
    try:
        yield server.url
    finally:
        server.close()


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

"""Shared fixtures: a real redis-server for the whole session, flushed per test.

Set REDIS_URL to use an existing server instead of starting one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

from bridge.config.embedded_redis import EmbeddedRedis


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

"""Readiness says so when Redis answers pings but takes no writes (read-only or full)."""

from __future__ import annotations

import redis

from bridge.config.embedded_redis import EmbeddedRedis, free_port
from bridge.observability.health import api_readiness, redis_reasons


def test_a_read_only_or_full_redis_is_not_ready() -> None:
    with EmbeddedRedis(appendonly=False) as server:
        client = redis.Redis(port=server.port)
        assert redis_reasons(client, writes=True) == []
        client.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
        ok, reasons = api_readiness(client, "sip:bot@contoso.com")
        assert not ok
        assert reasons == ["redis: not taking writes (ReadOnlyError)"]
        assert redis_reasons(client) == []  # liveness-style checks only ask for an answer
        client.execute_command("REPLICAOF", "NO", "ONE")
        client.config_set("maxmemory", "1")
        assert redis_reasons(client, writes=True) == ["redis: not taking writes (OutOfMemoryError)"]
        client.config_set("maxmemory", "0")
        assert redis_reasons(client, writes=True) == []
        client.close()

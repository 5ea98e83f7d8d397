"""Redis Sentinel for real: a master, a replica and a sentinel (redis-server --sentinel), and
``connect`` following a failover without being rebuilt."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bridge.config.embedded_redis import EmbeddedRedis, find_redis_server, free_port
from bridge.config.redis_conn import connect

MASTER = "bridge-master"


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():  # type: ignore[operator]
                return
        except redis.RedisError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture()
def sentinel_setup(tmp_path: Path) -> Iterator[tuple[EmbeddedRedis, EmbeddedRedis, int]]:
    master = EmbeddedRedis(appendonly=False).start()
    replica = EmbeddedRedis(appendonly=False).start()
    redis.Redis(port=replica.port).replicaof("127.0.0.1", master.port)
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor {MASTER} 127.0.0.1 {master.port} 1\n"
        f"sentinel down-after-milliseconds {MASTER} 500\n"
        f"sentinel failover-timeout {MASTER} 2000\n"
    )
    process = subprocess.Popen(
        [find_redis_server(), str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        probe = redis.Redis(port=port)
        _wait(
            lambda: probe.sentinel_master(MASTER)["num-slaves"] >= 1, 15, "the sentinel to see it"
        )
        yield master, replica, port
    finally:
        process.terminate()
        process.wait(timeout=10)
        replica.close()
        master.close()


def test_connect_finds_the_master_and_follows_a_failover(
    sentinel_setup: tuple[EmbeddedRedis, EmbeddedRedis, int],
) -> None:
    master, replica, port = sentinel_setup
    client = connect(
        f"redis+sentinel://127.0.0.1:{port}/{MASTER}/3", socket_timeout=2, socket_connect_timeout=2
    )
    client.set("greeting", "hello")
    assert redis.Redis(port=master.port, db=3).get("greeting") == b"hello"  # master, db 3

    master.stop(kill=True)
    _wait(lambda: client.set("after", "failover"), 30, "writes to the promoted replica")
    assert redis.Redis(port=replica.port, db=3).get("after") == b"failover"
    assert redis.Redis(port=replica.port).info("replication")["role"] == "master"

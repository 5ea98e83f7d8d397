"""``redis_unavailable`` against the errors a real redis-server gives when it cannot serve."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from bridge.config.embedded_redis import EmbeddedRedis, free_port
from bridge.config.redis_conn import connect
from bridge.config.redis_faults import Outage, redis_unavailable, wait_until_writable


@pytest.fixture()
def server() -> Iterator[redis.Redis]:
    with EmbeddedRedis(appendonly=False) as embedded:
        client = redis.Redis(port=embedded.port, socket_connect_timeout=1)
        client.set("k", "v")
        yield client
        client.close()


def writes(client: redis.Redis) -> list[BaseException]:
    """One error per way the bridge writes: a command, a script, MULTI/EXEC, WATCH transaction."""
    script = client.register_script("return redis.call('SET', KEYS[1], ARGV[1])")

    def watched() -> None:
        with client.pipeline() as pipe:
            pipe.watch("k")
            pipe.get("k")
            pipe.multi()
            pipe.set("k", "w")
            pipe.execute()

    attempts = [
        lambda: client.set("a", "b"),
        lambda: script(keys=["x"], args=["y"]),
        lambda: client.pipeline().set("a", "b").incr("n").execute(),
        watched,
    ]
    errors = []
    for attempt in attempts:
        with pytest.raises(redis.RedisError) as caught:
            attempt()
        errors.append(caught.value)
    return errors


def test_a_read_only_server_is_unavailable(server: redis.Redis) -> None:
    server.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))  # a dead master
    try:
        errors = writes(server)
        assert all(redis_unavailable(e) for e in errors), errors
    finally:
        server.execute_command("REPLICAOF", "NO", "ONE")
    assert server.set("a", "b")


def test_a_full_server_is_unavailable(server: redis.Redis) -> None:
    server.config_set("maxmemory-policy", "noeviction")
    server.config_set("maxmemory", "1")
    try:
        errors = writes(server)
        assert all(redis_unavailable(e) for e in errors), errors
    finally:
        server.config_set("maxmemory", "0")


def test_a_server_short_of_replicas_is_unavailable_in_pipelines_too(server: redis.Redis) -> None:
    # redis-py words a pipeline's error "Command # 1 (...) of pipeline caused error: NOREPLICAS"
    server.config_set("min-replicas-to-write", "1")
    try:
        errors = writes(server)
        assert any("of pipeline caused error" in str(e) for e in errors)
        assert all(redis_unavailable(e) for e in errors), errors
    finally:
        server.config_set("min-replicas-to-write", "0")


def test_a_stopped_server_is_unavailable() -> None:
    client = connect(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    with pytest.raises(redis.RedisError) as caught:
        client.ping()
    assert redis_unavailable(caught.value)


def test_answers_are_not_unavailability(server: redis.Redis) -> None:
    server.lpush("list", "x")
    with pytest.raises(redis.ResponseError) as caught:
        server.get("list")  # WRONGTYPE: a bug, not an outage
    assert not redis_unavailable(caught.value)
    assert not redis_unavailable(redis.WatchError("changed"))
    assert not redis_unavailable(ValueError("x"))


@pytest.mark.parametrize(
    "message",
    [
        "READONLY You can't write against a read only replica.",
        "OOM command not allowed when used memory > 'maxmemory'.",
        "LOADING Redis is loading the dataset in memory",
        "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
        "NOREPLICAS Not enough good replicas to write.",
        "MISCONF Redis is configured to save RDB snapshots, but it's unable to persist",
        "TRYAGAIN Multiple keys request during rehashing of slot",
    ],
)
def test_plain_response_errors_by_their_code(message: str) -> None:
    assert redis_unavailable(redis.ResponseError(message))
    worded = f"Command # 2 (SET k v) of pipeline caused error: {message}"
    assert redis_unavailable(redis.ResponseError(worded))
    assert not redis_unavailable(redis.ResponseError(worded.replace(message, "WRONGTYPE x")))
    try:
        try:
            raise redis.ResponseError(message)
        except redis.ResponseError as inner:
            raise redis.exceptions.ExecAbortError(
                "EXECABORT Transaction discarded because of previous errors."
            ) from inner
    except redis.exceptions.ExecAbortError as wrapped:
        assert redis_unavailable(wrapped)


def test_waiting_ends_when_writes_are_taken_and_logs_once(
    server: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    server.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
    log = logging.getLogger("test.redis_faults")
    outage = Outage(log, "test")
    stop = threading.Event()
    timer = threading.Timer(1.0, lambda: server.execute_command("REPLICAOF", "NO", "ONE"))
    timer.start()
    with caplog.at_level(logging.WARNING, logger="test.redis_faults"):
        started = time.monotonic()
        assert wait_until_writable(server, stop, outage)
    timer.join()
    assert 0.9 < time.monotonic() - started < 5
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["Redis unavailable; waiting for it", "Redis available again; resuming"]


def test_waiting_ends_on_stop() -> None:
    client = connect(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    started = time.monotonic()
    assert not wait_until_writable(client, stop, Outage(logging.getLogger("t"), "test"))
    assert time.monotonic() - started < 3

"""``watch_and_get``: WATCH and GET in one round trip, leaving the pipeline as ``watch`` then
``get`` leave it. Against a real redis-server (through a counting proxy for the round trips).
"""

from __future__ import annotations

import pytest
import redis

from bench._redis_trips import CountingProxy
from bridge.config.redis_conn import read_and_watch, watch_and_get


def test_one_round_trip_reads_the_value_and_the_transaction_commits(
    redis_client: redis.Redis, redis_proxy: CountingProxy
) -> None:
    redis_client.set("wg:a", "before")
    through = redis.Redis.from_url(redis_proxy.url())
    through.ping()
    redis_proxy.reset()
    with through.pipeline() as pipe:
        assert watch_and_get(pipe, "wg:a") == b"before"
        assert redis_proxy.reset().round_trips == 1
        pipe.multi()
        pipe.set("wg:a", "after")
        assert pipe.execute() == [True]
    assert redis_client.get("wg:a") == b"after"


def test_a_missing_key_reads_none(redis_client: redis.Redis) -> None:
    redis_client.delete("wg:none")
    with redis_client.pipeline() as pipe:
        assert watch_and_get(pipe, "wg:none") is None
        pipe.multi()
        pipe.set("wg:none", "made")
        pipe.execute()
    assert redis_client.get("wg:none") == b"made"


def test_a_write_by_someone_else_after_the_read_aborts_the_transaction(
    redis_client: redis.Redis,
) -> None:
    redis_client.set("wg:b", "mine")
    other = redis.Redis(connection_pool=redis_client.connection_pool)
    with redis_client.pipeline() as pipe:
        assert watch_and_get(pipe, "wg:b") == b"mine"
        other.set("wg:b", "theirs")
        pipe.multi()
        pipe.set("wg:b", "lost update")
        with pytest.raises(redis.WatchError):
            pipe.execute()
    assert redis_client.get("wg:b") == b"theirs"


def test_reset_unwatches_and_the_connection_goes_back_clean(redis_client: redis.Redis) -> None:
    redis_client.set("wg:c", "one")
    pool = redis.ConnectionPool.from_url(
        f"redis://{redis_client.connection_pool.connection_kwargs['host']}:"
        f"{redis_client.connection_pool.connection_kwargs['port']}",
        max_connections=1,
    )
    client = redis.Redis(connection_pool=pool)
    with client.pipeline() as pipe:
        watch_and_get(pipe, "wg:c")
    # the one connection, back in the pool: a transaction on it is not under the old WATCH
    redis_client.set("wg:c", "changed elsewhere")
    with client.pipeline() as pipe:
        pipe.multi()
        pipe.set("wg:c", "two")
        assert pipe.execute() == [True]
    assert client.get("wg:c") == b"two"
    pool.disconnect()


def test_a_dropped_connection_is_retried_before_anything_is_watched(
    redis_client: redis.Redis,
) -> None:
    redis_client.set("wg:d", "value")
    client = redis.Redis.from_url(
        "redis://{host}:{port}".format(**redis_client.connection_pool.connection_kwargs)
    )
    client.client_setname("wg-victim")
    victim = [c for c in redis_client.client_list() if c.get("name") == "wg-victim"]
    redis_client.client_kill_filter(_id=victim[0]["id"])  # the pooled connection is now dead
    with client.pipeline() as pipe:
        assert watch_and_get(pipe, "wg:d") == b"value"
        pipe.multi()
        pipe.set("wg:d", "written")
        pipe.execute()
    assert redis_client.get("wg:d") == b"written"


@pytest.mark.parametrize("failing", ["the read under WATCH", "a read sent before it"])
def test_an_error_answer_raises_and_leaves_no_answer_unread(
    redis_client: redis.Redis, failing: str
) -> None:
    redis_client.delete("wg:list")
    redis_client.rpush("wg:list", "x")
    redis_client.set("wg:after", "the right answer")
    redis_client.set("wg:string", "not a list")
    pool = redis.ConnectionPool(
        host=redis_client.connection_pool.connection_kwargs["host"],
        port=redis_client.connection_pool.connection_kwargs["port"],
        max_connections=1,
    )
    client = redis.Redis(connection_pool=pool)
    with client.pipeline() as pipe, pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        if failing == "the read under WATCH":
            watch_and_get(pipe, "wg:list")
        else:  # as the worker sends the line's head before its claim's WATCH
            read_and_watch(pipe, [("LINDEX", "wg:string", 0)], "wg:after")
    # the same (only) connection answers the next command with its own answer
    assert client.get("wg:after") == b"the right answer"
    pool.disconnect()


def test_only_a_fresh_pipeline_takes_it(redis_client: redis.Redis) -> None:
    with redis_client.pipeline() as pipe:
        pipe.watch("wg:e")
        with pytest.raises(redis.RedisError):
            watch_and_get(pipe, "wg:e")

"""The counting proxy the round-trip figures and tests rely on: a pipeline counts as one round
trip however many pieces it crosses the proxy in, and replies are counted whole however the
server's bytes are split.

It used to start a round trip on any client write after any answer: a large pipeline, written
by redis-py in pieces of about 6 kB, got its first answers before its last piece arrived and
counted as several (the cause of round-trip tests failing on a loaded machine).
"""

from __future__ import annotations

import itertools
from typing import Any

import redis
from hypothesis import given
from hypothesis import strategies as st

from bench._redis_trips import _ReplyCounter

Reply = Any  # a nested structure of the values below


def resp(value: Reply) -> bytes:
    """``value`` as RESP2: str a simple string, bytes a bulk string, int an integer, None a
    null bulk string, Exception an error, list an array, ("null-array",) a null array."""
    if isinstance(value, Exception):
        return f"-ERR {value}\r\n".encode()
    if isinstance(value, bool) or value is None:
        return b"$-1\r\n"
    if isinstance(value, int):
        return f":{value}\r\n".encode()
    if isinstance(value, str):
        return f"+{value}\r\n".encode()
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if isinstance(value, tuple):
        return b"*-1\r\n"
    return b"*%d\r\n" % len(value) + b"".join(resp(v) for v in value)


scalars = st.one_of(
    st.text(alphabet="abcQUEUED OK", max_size=8),
    st.binary(max_size=40),  # may hold CRLF: only the length says where it ends
    st.integers(min_value=-(2**40), max_value=2**40),
    st.none(),
    st.builds(ValueError, st.text(alphabet="abc xyz", max_size=10)),
    st.just(("null-array",)),
)
replies = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5), max_leaves=30)


@given(values=st.lists(replies, min_size=1, max_size=12), cuts=st.lists(st.integers(0, 10**6)))
def test_replies_are_counted_whole_however_the_bytes_are_split(
    values: list[Reply], cuts: list[int]
) -> None:
    stream = b"".join(resp(v) for v in values)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    counter = _ReplyCounter()
    counted = [counter.feed(stream[a:b]) for a, b in itertools.pairwise(points)]
    assert sum(counted) == len(values)


def test_a_large_pipeline_is_one_round_trip_and_single_commands_are_one_each(
    redis_client: redis.Redis, redis_proxy: Any
) -> None:
    db = int(redis_client.connection_pool.connection_kwargs.get("db", 0))
    client = redis.Redis.from_url(redis_proxy.url(db))
    client.ping()
    value = "v" * 300
    for transaction in (False, True):
        redis_proxy.reset()
        with client.pipeline(transaction=transaction) as pipe:
            for n in range(100):  # about 35 kB: several pieces on the wire
                pipe.set(f"trips:{n}", value)
                pipe.get(f"trips:{n}")
            answers = pipe.execute()
        counted = redis_proxy.reset()
        assert answers[1] == value.encode()
        # A transaction is exact. A plain pipeline is one unless the client stalls between two
        # of its pieces long enough for Redis to answer all it sent before (a loaded machine).
        assert counted.round_trips <= (1 if transaction else 2), (transaction, counted)
        assert counted.commands == 200 + (2 if transaction else 0)
    for n in range(3):
        client.get(f"trips:{n}")
    assert redis_proxy.reset().round_trips == 3

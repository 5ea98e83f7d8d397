"""The bridge's command packer writes the bytes redis-py's own packer writes, for any command,
and raises what it raises: it only skips redis-py's pass in Python over the arguments when hiredis
packs them the same way. Pure: no Redis; and one real round trip through a client that uses it."""

from __future__ import annotations

import enum
from typing import Any

import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis._parsers.encoders import Encoder
from redis.connection import HiredisRespSerializer, PythonRespSerializer

from bridge.config.redis_conn import connect
from bridge.config.redis_packer import BUFFER_CUTOFF, FastCommandPacker, fast_packer_applies


class Colour(enum.StrEnum):
    RED = "red"


class Count(int):
    pass


def redis_py_packer() -> HiredisRespSerializer:
    """What a redis-py connection with hiredis packs with by default."""
    encode = Encoder("utf-8", "strict", False).encode
    return HiredisRespSerializer(PythonRespSerializer(BUFFER_CUTOFF, encode).pack, encode)


arguments = st.one_of(
    st.text(),  # lone surrogates included: both must refuse them alike
    st.binary(max_size=64),
    st.integers(),  # beyond 64 bits too
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.binary(max_size=16).map(bytearray),
    st.binary(max_size=16).map(memoryview),
    st.just(Colour.RED),
    st.integers(-5, 5).map(Count),
    st.binary(min_size=BUFFER_CUTOFF, max_size=BUFFER_CUTOFF + 10),
)
names = st.sampled_from(["SET", "GET", "CLIENT SETNAME", b"MGET", b"SCRIPT LOAD", "EVALSHA"])


def outcome(pack: Any, args: tuple[Any, ...]) -> Any:
    try:
        return b"".join(bytes(chunk) for chunk in pack(*args))
    except Exception as exc:  # the same kind of error, whatever its wording
        return type(exc)


@settings(max_examples=500)
@given(names, st.lists(arguments, max_size=6))
def test_packs_what_redis_py_packs(name: str | bytes, rest: list[Any]) -> None:
    args = (name, *rest)
    assert outcome(FastCommandPacker().pack, args) == outcome(redis_py_packer().pack, args)


def test_only_for_utf8_strict() -> None:
    assert fast_packer_applies("redis://h:6379/0", {})
    assert fast_packer_applies("redis://h:6379/0?socket_timeout=5", {"retry": None})
    assert not fast_packer_applies("redis://h:6379/0?encoding=latin-1", {})
    assert not fast_packer_applies("redis://h:6379/0", {"encoding_errors": "replace"})


def test_a_client_of_the_bridge_packs_with_it(redis_url: str, redis_client: redis.Redis) -> None:
    client = connect(redis_url)
    with client.pipeline() as pipe:
        pipe.set("packer:é", "naïve ✓", ex=60)
        pipe.hset("packer:h", mapping={"n": 2**70, "x": 0.1 + 0.2})
        pipe.execute()
    assert redis_client.get("packer:é") == "naïve ✓".encode()
    stored = redis_client.hgetall("packer:h")
    assert stored == {b"n": str(2**70).encode(), b"x": b"0.30000000000000004"}
    connection = client.connection_pool.get_connection()
    try:
        assert isinstance(connection._command_packer, FastCommandPacker)
    finally:
        client.connection_pool.release(connection)
    latin = connect(redis_url + "?encoding=latin-1")
    connection = latin.connection_pool.get_connection()
    try:
        assert not isinstance(connection._command_packer, FastCommandPacker)
    finally:
        latin.connection_pool.release(connection)

"""One way for every role to open Redis from ``BRIDGE_REDIS_URL``: a plain URL, or Sentinel.

Plain URLs are anything ``redis.Redis.from_url`` takes (``redis://``, ``rediss://``,
``unix://``). A Sentinel deployment is named by

    redis+sentinel://[[user]:password@]host:port[,host:port...]/<master-name>[/<db>]

The sentinels are asked for the current master on every (re)connect, so a failover is
followed without a restart; the password, when given, is used for the master (and for the
sentinels, which commonly share it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from bridge.config.redis_packer import FastCommandPacker, fast_packer_applies

SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379


def quick_retry() -> Retry:
    """Two quick retries (about 0.3 s in all) of a command that met a dropped connection.

    redis-py's default retries a refused connection for about 4 s on every command; each role
    backs off by itself while Redis is unavailable (``redis_faults``), and a 4 s stall per
    command would hold back a 503, a SIGTERM or a worker's teardown for that long."""
    return Retry(ExponentialBackoff(cap=0.2, base=0.05), 2)


class RedisUrlError(ValueError):
    """The URL cannot name a Redis server; the message never contains the password."""


@dataclass(frozen=True)
class SentinelUrl:
    hosts: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:
        return (
            f"SentinelUrl(hosts={self.hosts!r}, master={self.master!r}, db={self.db}, "
            f"password={'[redacted]' if self.password else None})"
        )


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Parse a ``redis+sentinel://`` URL; raises RedisUrlError naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise RedisUrlError(f"not a {SENTINEL_SCHEME}:// URL")
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username: str | None = None
    password: str | None = None
    if userinfo:
        user, has_password, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if has_password else None
    hosts = tuple(_host_port(item) for item in hostlist.split(",") if item.strip())
    if not hosts:
        raise RedisUrlError("a Sentinel URL needs at least one host:port")
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if not segments or len(segments) > 2:
        raise RedisUrlError("the path must be /<master-name> or /<master-name>/<db>")
    db = 0
    if len(segments) == 2:
        if not segments[1].isdigit():
            raise RedisUrlError("the database must be a number")
        db = int(segments[1])
    return SentinelUrl(hosts, segments[0], db, username, password)


def _host_port(item: str) -> tuple[str, int]:
    host, sep, port = item.strip().rpartition(":")
    if not sep:
        return item.strip(), DEFAULT_SENTINEL_PORT
    if not host or not port.isdigit():
        raise RedisUrlError(f"not a host:port pair: {item.strip()!r}")
    return host.strip("[]"), int(port)


def connect(url: str, **options: Any) -> redis.Redis:
    """A client for ``url``; ``options`` (timeouts, health checks) apply to Redis connections.

    Responses are bytes, as RQ needs. Commands are retried briefly (``quick_retry``) unless
    ``retry`` says otherwise, and packed by ``FastCommandPacker`` unless another encoding is
    asked for.
    """
    options.setdefault("retry", quick_retry())
    if fast_packer_applies(url, options):
        options.setdefault("command_packer", FastCommandPacker())
    if not url.startswith(SENTINEL_SCHEME + "://"):
        return redis.Redis.from_url(url, **options)
    spec = parse_sentinel_url(url)
    auth: dict[str, Any] = {"username": spec.username, "password": spec.password}
    sentinel_options = {
        k: v for k, v in options.items() if k in ("socket_timeout", "socket_connect_timeout")
    }
    sentinel = Sentinel(
        list(spec.hosts),
        sentinel_kwargs={**sentinel_options, **auth},
        **sentinel_options,
    )
    return sentinel.master_for(spec.master, db=spec.db, **auth, **options)


# A pipeline left watching a key by ``read_and_watch``, and the key's value it read then.
Watched = tuple[redis.client.Pipeline, Any]


def watch_and_get(pipe: redis.client.Pipeline, key: str) -> Any:
    """``pipe.watch(key)`` then ``pipe.get(key)``, in one round trip instead of two.

    redis-py sends a WATCH and each read after it on their own. Here both go out together on
    the connection the pipeline then keeps, and the pipeline is left watching, exactly as the two
    calls leave it: ``multi()`` and ``execute()`` follow as usual, and ``reset()`` unwatches.
    A connection that breaks is retried under the client's retry policy, like a WATCH; once the
    key is watched, nothing is retried (the transaction's EXEC tells whether it held).
    """
    return read_and_watch(pipe, (), key)[1]


def read_and_watch(
    pipe: redis.client.Pipeline, reads: Sequence[tuple[Any, ...]], key: str
) -> tuple[list[Any], Any]:
    """``watch_and_get`` with other reads before it in the same round trip: their answers, as
    Redis gives them (no redis-py reply conversion), and ``key``'s value read under WATCH.
    An error answer raises (and the connection is dropped, so nothing is left unread)."""
    if pipe.watching or pipe.explicit_transaction or pipe.command_stack:
        raise redis.RedisError("read_and_watch starts a transaction's WATCH")
    conn = pipe.connection
    if conn is None:
        conn = pipe.connection = pipe.connection_pool.get_connection()
    commands = [*reads, ("WATCH", key), ("GET", key)]

    def send() -> tuple[list[Any], Any]:
        conn.send_packed_command(conn.pack_commands(commands))
        answers = [conn.read_response() for _ in commands]  # an error answer raises here
        return answers[: len(reads)], answers[-1]

    try:
        found = conn.retry.call_with_retry(send, lambda error: conn.disconnect())
    except BaseException:
        conn.disconnect()  # an answer may be left unread: the connection is not reused as is
        raise
    pipe.watching = True
    return found


def execute_then_watch(pipe: redis.client.Pipeline, key: str) -> tuple[list[Any], Watched | None]:
    """``pipe.execute()`` of a transaction the pipeline watches, with a WATCH of ``key`` and a
    GET of it sent in the same write right after the EXEC: the transaction's answers, and a
    pipeline left watching ``key`` with the value it read then (``Watched``), for the next
    update of that key without a round trip of its own before its EXEC.

    A failure is what ``execute()`` makes of it: a connection that breaks before the EXEC's
    answer raises WatchError (the caller reads the key again and finds what its transaction
    did), a WatchError or an error answer is raised as it comes. Once the EXEC has answered,
    the WATCH and the GET are a bonus: when they cannot be read, the answers come back with no
    ``Watched``. The connection is dropped whenever an answer may be left unread on it.
    """
    conn = pipe.connection
    if conn is None or not pipe.watching or not pipe.explicit_transaction or pipe.scripts:
        return pipe.execute(), None
    follow = conn.pack_commands([("WATCH", key), ("GET", key)])
    send = conn.send_packed_command

    def send_with_watch(command: Any, check_health: bool = True) -> None:
        chunks = [command] if isinstance(command, bytes | str) else list(command)
        send([*chunks, *follow], check_health)

    conn.send_packed_command = send_with_watch  # type: ignore[method-assign]
    try:
        answers = pipe._execute_transaction(conn, pipe.command_stack, True)
    except (redis.ConnectionError, redis.TimeoutError) as error:
        conn.disconnect()
        raise redis.WatchError("the connection broke while watching") from error
    except BaseException:
        conn.disconnect()
        raise
    finally:
        del conn.send_packed_command  # the class's own again
    try:
        conn.read_response()  # the WATCH's OK
        raw = conn.read_response()
    except BaseException:
        conn.disconnect()
        return answers, None
    watching = redis.client.Pipeline(pipe.connection_pool, pipe.response_callbacks, True, None)
    watching.connection, watching.watching = conn, True
    pipe.connection, pipe.watching = None, False  # the caller's reset() leaves it to the new one
    return answers, (watching, raw)


class SentScript:
    """A registered script's call written to Redis now, its answer read later with ``answer()``:
    the caller does other work meanwhile (an HTTP request), and Redis runs the script while it
    does. The call holds a connection of the client's pool until ``answer()``.

    Once ``send_script`` returns, the call is in the socket: a process killed after that still
    has it delivered and run (a closing socket sends what it holds). Its answer is not read
    again: a caller that gets an error other than an error answer does not know whether the
    script ran, and repeats it only if the script is a check-and-set.
    """

    def __init__(self, client: redis.Redis, script: Any, keys: Sequence[Any], args: Sequence[Any]):
        self._pool = client.connection_pool
        self._conn: Any = self._pool.get_connection()
        try:
            self._conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
        except BaseException:
            self._drop()
            raise

    def answer(self) -> Any:
        """The script's answer, as Redis gives it. An error answer raises as such (a Redis that
        lost its scripts: ``NoScriptError``); a broken connection is dropped, not reused."""
        conn, self._conn = self._conn, None
        if conn is None:
            raise redis.RedisError("the answer was already read")
        try:
            return conn.read_response()
        except redis.ResponseError:
            raise  # the answer was read in full: the connection can serve the next call
        except BaseException:
            conn.disconnect()
            raise
        finally:
            self._pool.release(conn)

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.disconnect()
            self._pool.release(conn)


def send_script(
    client: redis.Redis, script: Any, keys: Sequence[Any], args: Sequence[Any]
) -> SentScript:
    """Write a call of ``script`` (registered with ``client.register_script``) and return
    without waiting for its answer; see ``SentScript``."""
    return SentScript(client, script, keys, args)

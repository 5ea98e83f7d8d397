"""The API's check of a pooled Redis connection under gevent, made with the OS's ``poll``: it
still finds a connection the server closed (the next command goes out on a new one) and one left
with an answer unread (never reused as is, so no command reads another's answer).

Run in a process of its own, patched by gevent as the API's is, against the session's Redis.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    from gevent import monkey
    monkey.patch_all()
    import sys
    import redis
    from bridge.config.gevent_redis import use_os_poll_for_idle_checks

    assert use_os_poll_for_idle_checks()
    client = redis.Redis.from_url(sys.argv[1])
    client.set("gevent-check", "one")
    assert client.get("gevent-check") == b"one"

    # closed by the server while idle in the pool: found, and the command goes out anew
    pooled = client.client_id()
    killer = redis.Redis.from_url(sys.argv[1])
    assert killer.client_kill_filter(_id=pooled) == 1
    assert client.get("gevent-check") == b"one"
    assert client.client_id() != pooled

    # left with an answer unread: that connection is not reused as is
    conn = client.connection_pool.get_connection()
    conn.send_command("GET", "gevent-check")
    import time
    time.sleep(0.1)  # the answer is waiting on the socket
    client.connection_pool.release(conn)
    client.set("gevent-check", "two")
    assert client.get("gevent-check") == b"two"
    print("ok")
    """
)


def test_pooled_connections_are_still_checked_with_the_os_poll(redis_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, redis_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_it_stands_aside_when_redis_py_checks_connections_otherwise() -> None:
    script = textwrap.dedent(
        """
        from gevent import monkey
        monkey.patch_all()
        from redis._parsers import hiredis
        del hiredis._socket_can_read
        from bridge.config.gevent_redis import use_os_poll_for_idle_checks
        print(use_os_poll_for_idle_checks())
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"

"""redis-py's look at a pooled connection, made with the operating system's ``poll`` under gevent.

Every time redis-py takes a connection from its pool it checks, with a zero-timeout ``poll``,
that nothing is waiting on the socket (data left unread, or a close by the server). gevent's
patched ``select.poll`` does that through its hub (watchers, a timeout object): about a sixth of
the API's CPU per ``POST /messages``. A zero-timeout ``poll`` never blocks, so the original one
is as cooperative and answers the same. Any other timeout, and a TLS socket with decrypted bytes
pending, take redis-py's own path.

``use_os_poll_for_idle_checks`` does nothing when redis-py no longer has the function it
replaces (another version checks connections differently). It lives here, not in ``api``:
gunicorn's master calls it, and importing ``bridge.api`` there would import prometheus_client
before the gunicorn settings point it at its multiprocess directory.
"""

from __future__ import annotations

from typing import Any

from gevent import monkey

_installed = False


def use_os_poll_for_idle_checks() -> bool:
    """Install the zero-timeout check in redis-py's hiredis parser; whether it was."""
    global _installed
    try:
        from redis._parsers import hiredis as parser
    except ImportError:
        return False
    original = getattr(parser, "_socket_can_read", None)
    if original is None or _installed:
        return _installed
    os_poll = monkey.get_original("select", "poll")
    readable = monkey.get_original("select", "POLLIN")

    def socket_can_read(sock: Any, timeout: float) -> bool:
        if timeout != 0 or (hasattr(sock, "pending") and sock.pending()):
            return bool(original(sock, timeout))
        poller = os_poll()
        poller.register(sock, readable)
        return bool(poller.poll(0))

    parser._socket_can_read = socket_can_read
    _installed = True
    return True

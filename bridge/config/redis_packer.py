"""Packing Redis commands for the wire with less CPU than redis-py's hiredis packer.

redis-py hands each command to ``hiredis.pack_command`` only after a pass in Python over its
arguments (a memoryview check, then each one through its ``Encoder``): about 3 µs a command
against 0.4 µs for hiredis alone, a tenth of a worker's CPU in a burst (``bench.floor
--profile``). For UTF-8 with strict errors, redis-py's defaults and the bridge's, hiredis packs
``str``, ``bytes``, ``int`` and ``float`` into the same bytes as that pass does (floats by their
``repr``, ints of any size). So this packer asks hiredis first and leaves everything else to
redis-py's own packer, which then packs it or raises its own error: a ``bool``, ``None``, a
``bytearray``, a subclass of ``int``, and a command name of two words (``CLIENT SETNAME``),
which redis-py splits.
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis._parsers.encoders import Encoder
from redis.connection import HiredisRespSerializer, PythonRespSerializer

# redis-py's size above which a packed value is sent as its own buffer (``_buffer_cutoff``).
BUFFER_CUTOFF = 6000


class FastCommandPacker:
    """A ``command_packer`` for redis-py connections whose encoding is UTF-8, strict."""

    def __init__(self) -> None:
        encode = Encoder("utf-8", "strict", False).encode
        fallback = PythonRespSerializer(BUFFER_CUTOFF, encode)
        self._redis_py = HiredisRespSerializer(fallback.pack, encode)

    def pack(self, *args: Any) -> list[bytes]:
        name = args[0]
        if (" " in name) if isinstance(name, str) else (b" " in name):
            return self._redis_py.pack(*args)
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            return self._redis_py.pack(*args)


def fast_packer_applies(url: str, options: dict[str, Any]) -> bool:
    """Whether a client for ``url`` with ``options`` encodes as UTF-8, strict (no ``encoding``
    or ``encoding_errors`` given in either)."""
    query = url.partition("?")[2]
    named = {part.partition("=")[0] for part in query.split("&") if part}
    return not ({"encoding", "encoding_errors"} & (named | set(options)))

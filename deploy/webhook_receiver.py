"""A tiny webhook receiver for demos: verifies Standard Webhooks signatures, prints each event.

Standard library only, so it runs in any Python 3.11+ image:

    python deploy/webhook_receiver.py --host 0.0.0.0 --port 8091 --secret whsec_...

POST any path: the body is verified (when a secret is given) and printed as one JSON line;
the answer is 204, or 401 for a bad signature. ``GET /healthz`` answers 200.
The secret may also come from ``WEBHOOK_SECRET`` (or ``BRIDGE_WEBHOOK_SECRET``).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

TOLERANCE_S = 300
MAX_BODY_BYTES = 1024 * 1024


def signing_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret."""
    body = secret.removeprefix("whsec_")
    return base64.b64decode(body + "=" * (-len(body) % 4))


def verify(key: bytes, msg_id: str, timestamp: str, body: bytes, header: str) -> bool:
    """Whether one of the ``v1,<sig>`` entries of ``header`` signs ``id.timestamp.body``."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs(time.time() - sent) > TOLERANCE_S:
        return False
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for entry in header.split():
        version, _, signature = entry.partition(",")
        if version == "v1" and hmac.compare_digest(signature, expected):
            return True
    return False


def make_handler(key: bytes | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "webhook-receiver/1"

        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._answer(413)
                return
            body = self.rfile.read(length)
            msg_id = self.headers.get("webhook-id", "")
            verified = None
            if key is not None:
                verified = verify(
                    key,
                    msg_id,
                    self.headers.get("webhook-timestamp", ""),
                    body,
                    self.headers.get("webhook-signature", ""),
                )
            try:
                event = json.loads(body)
            except ValueError:
                event = body.decode("utf-8", "replace")
            line = {"path": self.path, "webhook_id": msg_id, "verified": verified, "event": event}
            print(json.dumps(line, ensure_ascii=False), flush=True)
            self._answer(401 if verified is False else 204)

        def _answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass  # one JSON line per event is enough

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument(
        "--secret",
        default=os.environ.get("WEBHOOK_SECRET") or os.environ.get("BRIDGE_WEBHOOK_SECRET"),
        help="whsec_... secret; without one, signatures are not checked",
    )
    args = parser.parse_args(argv)
    key = signing_key(args.secret) if args.secret else None
    server = ThreadingHTTPServer((args.host, args.port), make_handler(key))
    print(f"webhook receiver listening on {args.host}:{server.server_port}", flush=True)

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

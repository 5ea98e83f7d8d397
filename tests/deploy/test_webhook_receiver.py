"""deploy/webhook_receiver.py, the demo profile's receiver: verifies and prints what it gets."""

from __future__ import annotations

import importlib.util
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from types import ModuleType

import pytest
from standardwebhooks import Webhook

from tests.deploy.conftest import ROOT

SECRET = "whsec_ZGVtby1vbmx5LWNoYW5nZS1tZS1pbi1wcm9kdWN0aW9u"


def load_receiver() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "webhook_receiver", ROOT / "deploy" / "webhook_receiver.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def receiver_url() -> Iterator[str]:
    module = load_receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), module.make_handler(module.signing_key(SECRET)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_signed_event_is_accepted_and_printed(
    receiver_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    body = json.dumps({"id": "evt_1", "type": "message.received", "data": {"text": "hi"}})
    now = datetime.now(tz=UTC)
    signature = Webhook(SECRET).sign("evt_1", now, body)
    headers = {
        "Content-Type": "application/json",
        "webhook-id": "evt_1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": f"v1,bogus {signature}",
    }
    assert post(receiver_url + "/ucwa", body.encode(), headers) == 204
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["verified"] is True
    assert line["event"]["data"]["text"] == "hi"


def test_bad_signature_is_refused(receiver_url: str) -> None:
    now = datetime.now(tz=UTC)
    headers = {
        "webhook-id": "evt_2",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(SECRET).sign("evt_2", now, "other body"),
    }
    assert post(receiver_url + "/ucwa", b'{"id": "evt_2"}', headers) == 401


def test_health() -> None:
    module = load_receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), module.make_handler(None))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/healthz"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
    finally:
        server.shutdown()
        server.server_close()
        thread.join()

"""The demo's parts on their own: the signature-checking receiver and the port fallback.

Fast: no bridge processes, a real HTTP receiver on a free port.
"""

from __future__ import annotations

import base64
import json
import os
import socket
from datetime import UTC, datetime

import pytest
import requests
from standardwebhooks.webhooks import Webhook

from bridge.demo import WebhookReceiver, describe_event, listen, metrics_port_in, port_free

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()


def _post(url: str, body: bytes, secret: str, msg_id: str = "evt_1") -> requests.Response:
    now = datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id, now, body.decode())
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
        "Content-Type": "application/json",
    }
    return requests.post(url, data=body, headers=headers, timeout=5)


def test_receiver_prints_verified_events_and_rejects_bad_signatures() -> None:
    shown: list[str] = []
    receiver = WebhookReceiver(SECRET, show=shown.append).start()
    try:
        event = {
            "id": "evt_1",
            "type": "message.received",
            "timestamp": "2024-05-01T12:00:00.000Z",
            "data": {"from": {"uri": "sip:echo@contoso.com", "name": "Echo"}, "text": "héllo"},
        }
        body = json.dumps(event).encode()
        assert _post(receiver.url, body, SECRET).status_code == 204
        other = "whsec_" + base64.b64encode(os.urandom(24)).decode()
        assert _post(receiver.url, body, other).status_code == 401
        assert requests.post(receiver.url, data=body, timeout=5).status_code == 401
    finally:
        receiver.stop()
    assert shown[0] == '[webhook] message.received from sip:echo@contoso.com: "héllo"'
    assert shown[1:] == ["[webhook] rejected a request with a bad signature"] * 2
    assert receiver.events == [event]


def test_describe_status_events() -> None:
    failed = {
        "type": "message.failed",
        "data": {"message_id": "msg_1", "status": "failed", "error": {"code": "declined"}},
    }
    assert describe_event(failed) == "[webhook] message.failed msg_1 (declined)"
    delivered = {"type": "message.delivered", "data": {"message_id": "msg_2", "error": None}}
    assert describe_event(delivered) == "[webhook] message.delivered msg_2"
    of_broadcast = {
        "type": "message.delivered",
        "data": {"message_id": "msg_3", "broadcast": "bc_1"},
    }
    assert describe_event(of_broadcast) == "[webhook] message.delivered msg_3 [broadcast bc_1]"
    plain = {"type": "message.received", "data": {"from": "sip:a@contoso.com", "text": "x"}}
    assert describe_event(plain) == '[webhook] message.received from sip:a@contoso.com: "x"'


def test_a_busy_port_falls_back_to_a_free_one(capsys: object) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        assert not port_free(taken)
        with listen(taken, "API") as chosen:
            port = chosen.getsockname()[1]
            assert port != taken and port > 0
            # It is bound and listening already: nobody can take it before the API serves on it.
            assert not port_free(port)
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                pass
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert f"port {taken} is busy; the API uses port {port} instead" in out


def test_a_free_port_is_kept() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with listen(port, "API") as sock:
        assert sock.getsockname()[1] == port


def test_the_metrics_port_is_read_from_the_roles_log() -> None:
    log = "\n".join(
        [
            '{"message": "worker starting", "port": 1}',
            "not json, serving /metrics on 2",
            '{"message": "serving /metrics", "port": 41234}',
            '{"message": "serving /metrics", "port": "x"}',
        ]
    )
    assert metrics_port_in(log) == 41234
    assert metrics_port_in('{"message": "worker starting"}') is None


def test_webhooks_can_go_to_a_receiver_of_ones_own() -> None:
    import shutil
    import threading

    from bridge.demo import Demo, parse_args

    secret = "whsec_" + base64.b64encode(b"0123456789abcdef0123").decode()
    args = parse_args(["--webhook-url", "http://127.0.0.1:9/hooks", "--webhook-secret", secret])
    demo = Demo(args, threading.Event())
    try:
        demo.redis = type("R", (), {"url": "redis://127.0.0.1:1/0"})()
        env = demo.environment("worker")
    finally:
        shutil.rmtree(demo.workdir, ignore_errors=True)
    assert env["BRIDGE_WEBHOOK_URL"] == "http://127.0.0.1:9/hooks"
    assert env["BRIDGE_WEBHOOK_SECRET"] == secret
    assert env["BRIDGE_WEBHOOK_ALLOW_PRIVATE"] == "true"
    assert demo.receiver is None


@pytest.mark.parametrize(
    "argv",
    [
        ["--webhook-secret", "whsec_AAAA"],
        ["--webhook-url", "ftp://x/y"],
        ["--webhook-url", "http://x/y", "--no-receiver"],
        ["--webhook-url", "http://x/y", "--webhook-secret", "not-a-secret"],
    ],
)
def test_bad_webhook_options_are_refused_with_a_usage_error(argv: list[str]) -> None:
    from bridge.demo import parse_args

    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2

"""kill -9 of the worker while it delivers a webhook: the try it took is not lost with it.

The receiver holds the POST for a while; the worker is killed with the POST out and its try
claimed; a fresh worker starts, as an orchestrator would. Once the try's lease is over (the job's
time limit), the workers' maintenance tries it again and the receiver gets the event, under the
same webhook-id, with the lost try in the delivery's attempts.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.e2e.conftest import ALICE, BOT, SECRET, MakeBridge, wait_for
from tests.fault.conftest import FAULT_ENV, kill9
from tests.webhooks.receiver import Reply, WebhookReceiver

TIMEOUT_S = 3  # the job's time limit, and so the try's lease: 3 x 3 + 30 = 39 s


@pytest.mark.timeout(180)
def test_worker_killed_mid_webhook_delivery(make_bridge: MakeBridge) -> None:
    with WebhookReceiver(default=Reply(200, delay_s=2.5)) as receiver:
        bridge = make_bridge(
            env={
                **FAULT_ENV,
                "BRIDGE_WEBHOOK_URL": receiver.url(),
                "BRIDGE_WEBHOOK_SECRET": SECRET,
                "BRIDGE_WEBHOOK_ALLOW_PRIVATE": "true",
                "BRIDGE_WEBHOOK_TIMEOUT_S": str(TIMEOUT_S),
                "BRIDGE_MAINTENANCE_INTERVAL_S": "1",
            }
        )
        bridge.sim_call("POST", f"/_sim/users/{ALICE}/messages", {"to": BOT, "text": "lost?"})
        [first] = receiver.wait_for(1, timeout_s=20)
        event_id = first.headers["webhook-id"]
        kill9(bridge.procs["worker"][0])  # the POST is out, the receiver still holds it
        killed_at = time.monotonic()
        receiver.default = Reply(200)
        bridge.start_worker()

        wait_for(
            lambda: len(receiver.received) >= 2, 90, "the lost try to be tried again", bridge.logs
        )
        recovered_s = time.monotonic() - killed_at
        again = receiver.received[1]
        assert again.headers["webhook-id"] == event_id
        assert json.loads(again.body)["data"]["text"] == "lost?"
        # not before the lease ran out: until then the killed run might still have answered
        assert recovered_s >= 3 * TIMEOUT_S + 30 - 5, recovered_s
        delivery = bridge.api_get("/webhooks/deliveries")["items"][0]
        wait_for(
            lambda: (
                bridge.api_get(f"/webhooks/deliveries/{delivery['id']}")["status"] == "succeeded"
            ),
            10,
            "the delivery to be recorded",
            bridge.logs,
        )
        detail = bridge.api_get(f"/webhooks/deliveries/{delivery['id']}")
        errors = [attempt.get("error") or "" for attempt in detail["attempts"]]
        assert errors[0].startswith("worker_lost"), detail
        assert "lost with its worker" in bridge.full_logs()

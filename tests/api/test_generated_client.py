"""A client generated from the OpenAPI document with openapi-python-client gives typed objects
for every operation, against the real API under gunicorn: what an integrator gets."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis

from bridge.api.openapi import build_document
from bridge.outbound.messages import MessageRecord, MessageStatus
from bridge.outbound.status_events import status_event
from tests.api.conftest import SEND_AND_READ_KEY

PACKAGE = "ucwa_bridge_generated_client"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    work = tmp_path_factory.mktemp("client")
    document = work / "openapi.json"
    document.write_text(json.dumps(build_document(1000)))
    tool = Path(sys.executable).with_name("openapi-python-client")
    env = {**os.environ, "PATH": f"{tool.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        [
            *(str(tool), "generate", "--path", str(document), "--meta", "none"),
            *("--output-path", str(work / PACKAGE)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # A warning means some operation or schema was left out of the client.
    assert "Warning" not in done.stdout + done.stderr, done.stdout + done.stderr
    sys.path.insert(0, str(work))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(work))
        for name in [n for n in sys.modules if n.split(".")[0] == PACKAGE]:
            del sys.modules[name]
        shutil.rmtree(work, ignore_errors=True)


def module(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


def test_every_operation_returns_typed_objects(
    generated: ModuleType, gunicorn_api: int, redis_client: redis.Redis
) -> None:
    models = module("models")
    client = generated.AuthenticatedClient(
        base_url=f"http://127.0.0.1:{gunicorn_api}", token=SEND_AND_READ_KEY
    )
    with client as api:
        sent = module("api.messages.send_message").sync(
            client=api,
            body=models.SendMessageRequest(to="sip:alice@contoso.com", text="typed"),
            idempotency_key="generated-client-1",
        )
        assert isinstance(sent, models.Message), sent
        assert sent.status == models.MessageStatus.QUEUED and sent.text == "typed"

        again = module("api.messages.get_message").sync(sent.id, client=api)
        assert isinstance(again, models.Message) and again.id == sent.id

        missing = module("api.messages.get_message").sync("msg_" + "0" * 32, client=api)
        assert isinstance(missing, models.Problem) and missing.status == 404

        listed = module("api.messages.list_messages").sync(
            client=api, idempotency_key="generated-client-1", limit=10
        )
        assert isinstance(listed, models.MessagePage)
        assert [m.id for m in listed.items] == [sent.id] and listed.next_cursor is None

        broadcast = module("api.broadcasts.send_broadcast").sync(
            client=api,
            body=models.SendBroadcastRequest(
                to=["sip:alice@contoso.com", "sip:bob@contoso.com"], text="to both"
            ),
        )
        assert isinstance(broadcast, models.Broadcast) and broadcast.total == 2
        assert broadcast.counts.queued == 2
        fetched = module("api.broadcasts.get_broadcast").sync(broadcast.id, client=api)
        assert isinstance(fetched, models.Broadcast)
        assert [m.id for m in fetched.messages] == [m.id for m in broadcast.messages]

        cancelled = module("api.messages.cancel_message").sync(broadcast.messages[1].id, client=api)
        assert isinstance(cancelled, models.Message)
        assert cancelled.status == models.MessageStatus.CANCELLED
        assert cancelled.broadcast == broadcast.id

        page = module("api.conversations.list_conversations").sync(client=api)
        assert isinstance(page, models.ConversationPage) and page.items == []
        unknown = module("api.conversations.get_conversation").sync("conv_" + "0" * 24, client=api)
        assert isinstance(unknown, models.Problem) and unknown.status == 404

        deliveries = module("api.webhooks.list_deliveries").sync(client=api)
        assert isinstance(deliveries, models.DeliveryPage)
        endpoints = module("api.webhooks.list_endpoints").sync(client=api)
        assert isinstance(endpoints, models.EndpointList)
        replayed = module("api.webhooks.replay_deliveries").sync(
            client=api, body=models.ReplayDeliveriesBody(since=_now())
        )
        assert isinstance(replayed, models.ReplayResult) and replayed.replayed == 0

        health = module("api.operations.get_health").sync(client=generated.Client(api._base_url))
        assert isinstance(health, models.Health) and health.status == "ok"


def test_event_bodies_parse_into_the_generated_event_models(generated: ModuleType) -> None:
    """A receiver team's models read the bodies the bridge really sends."""
    models = module("models")
    record = MessageRecord.new(
        to="sip:alice@contoso.com", conversation=None, text="hi", html=None, subject=None,
        importance="Normal", validity_s=60,
    )  # fmt: skip
    delivered = replace(record, status=MessageStatus.DELIVERED)
    event = status_event(delivered, datetime.now(UTC))
    assert event is not None
    parsed = models.MessageDeliveredEvent.from_dict(event)
    assert parsed.data.message_id == record.id
    assert parsed.to_dict()["data"] == event["data"]
    assert parsed.timestamp == datetime.fromisoformat(event["timestamp"])


def _now() -> datetime:
    return datetime.now(UTC)

"""Fixtures for webhook tests: a clean webhook environment with a fast retry schedule."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.webhooks.receiver import WebhookReceiver


@pytest.fixture(autouse=True)
def webhook_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("BRIDGE_WEBHOOK"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BRIDGE_WEBHOOK_SCHEDULE_S", "0,0")
    monkeypatch.setenv("BRIDGE_WEBHOOK_JITTER", "0")
    monkeypatch.setenv("BRIDGE_WEBHOOK_TIMEOUT_S", "5")


@pytest.fixture()
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running

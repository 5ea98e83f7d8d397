"""Webhook hooks each process builds from its environment: status events wherever a message can
end (poller, workers), inbound events in the poller.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from bridge.inbound.events import InboundEvents
from bridge.outbound.outcomes import StatusHook
from bridge.outbound.status_events import status_hook
from bridge.webhooks.endpoints import webhook_config


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def status_events(account: str, env: Mapping[str, str] | None = None) -> StatusHook | None:
    endpoints, settings = webhook_config(env)
    if not endpoints:
        return None
    return status_hook(endpoints, settings, account=account)


def inbound_events(account: str, env: Mapping[str, str] | None = None) -> InboundEvents | None:
    values = os.environ if env is None else env
    endpoints, settings = webhook_config(values)
    if not endpoints:
        return None
    return InboundEvents(
        endpoints,
        account,
        settings=settings,
        typing_events=_flag(values, "BRIDGE_WEBHOOK_TYPING_EVENTS"),
        ended_events=_flag(values, "BRIDGE_WEBHOOK_ENDED_EVENTS"),
    )

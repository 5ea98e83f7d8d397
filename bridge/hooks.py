"""Webhook hooks each process builds from its environment: status events wherever a message can
end (poller, workers), inbound events in the poller.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from bridge.config.accounts import DEFAULT_ID
from bridge.config.environment import read_variables
from bridge.inbound.events import InboundEvents
from bridge.outbound.outcomes import StatusHook
from bridge.outbound.status_events import status_hook
from bridge.webhooks.endpoints import webhook_config


def status_events(account: str, env: Mapping[str, str] | None = None) -> StatusHook | None:
    endpoints, settings = webhook_config(env)
    if not endpoints:
        return None
    return status_hook(endpoints, settings, account=account)


def inbound_events(
    account: str, env: Mapping[str, str] | None = None, account_id: str = DEFAULT_ID
) -> InboundEvents:
    """Built with or without endpoints: it also keeps each conversation's message log."""
    values = os.environ if env is None else env
    endpoints, settings = webhook_config(values)
    flags = read_variables(values, ("webhook_typing_events", "webhook_ended_events"))
    return InboundEvents(
        endpoints,
        account,
        settings=settings,
        typing_events=flags.webhook_typing_events,
        ended_events=flags.webhook_ended_events,
        account_id=account_id,
    )

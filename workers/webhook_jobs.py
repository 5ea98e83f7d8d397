"""RQ job entry point for webhook deliveries; the logic lives in ``bridge.webhooks.delivery``.

Run workers as ``rq worker webhooks --with-scheduler`` so scheduled retries get enqueued.
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache

import redis
from rq import get_current_job

from bridge.config.redis_conn import connect
from bridge.observability.metrics import log_and_count_webhook_outcome
from bridge.webhooks.delivery import Deliverer
from bridge.webhooks.endpoints import WebhookEndpoint, load_endpoints
from bridge.webhooks.recovery import recover_lost_tries
from bridge.webhooks.settings import WebhookSettings
from workers.rq_worker import stopping

log = logging.getLogger("ucwa_bridge.webhooks")


def deliver_webhook(delivery_id: str) -> dict[str, str]:
    """Perform the scheduled try of one delivery; safe to run twice (the record decides)."""
    report = _deliverer().deliver(delivery_id)
    return {"action": report.action, "reason": report.reason}


def deliver_webhooks(delivery_ids: list[str]) -> dict[str, int]:
    """Perform the first tries of a batch of deliveries (``Deliverer.deliver_many``); safe to
    run twice. How many tries came to each action."""
    actions: dict[str, int] = {}
    for report in _deliverer().deliver_many(list(delivery_ids)):
        actions[report.action] = actions.get(report.action, 0) + 1
    return actions


def _deliverer() -> Deliverer:
    job = get_current_job()
    # outside a worker (e.g. from a shell) connect as the worker would
    connection = connect(os.environ["BRIDGE_REDIS_URL"]) if job is None else job.connection
    settings, endpoints = _config(_webhook_env())
    # A try waits (within its job time) for Redis to come back, unless the worker is stopping.
    return Deliverer(
        connection,
        settings,
        endpoints,
        on_outcome=log_and_count_webhook_outcome,
        stop=stopping,
    )


def recover_lost_webhook_tries(connection: redis.Redis) -> list[str]:
    """The workers' maintenance: tries lost with a worker are tried again (``recovery.py``)."""
    settings, _ = _config(_webhook_env())
    return recover_lost_tries(connection, settings)


def _webhook_env() -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("BRIDGE_WEBHOOK")))


@lru_cache(maxsize=4)
def _config(
    env: tuple[tuple[str, str], ...],
) -> tuple[WebhookSettings, tuple[WebhookEndpoint, ...]]:
    # Read once per distinct environment; a changed file needs a worker restart.
    values = dict(env)
    settings = WebhookSettings.from_env(values)
    if not settings.tls_verify:
        log.warning(
            "TLS certificate verification of webhook receivers is OFF "
            "(BRIDGE_WEBHOOK_TLS_VERIFY=false): anyone on the network path can forge answers"
        )
    return settings, tuple(load_endpoints(values))

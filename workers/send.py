"""RQ job entry points for outbound messages: one send attempt, and the outcome watchdog.

Each job runner of a worker process (``BRIDGE_WORKER_RUNNERS``) keeps one Sender, and so one
pooled UCWA connection, for all its jobs; the runners of a process share one UCWA request in
flight (``build_sender``'s ``slot``).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace

from rq import get_current_job

from bridge.config.accounts import DEFAULT_ID
from bridge.config.redis_conn import connect
from bridge.config.settings import Settings
from bridge.hooks import status_events
from bridge.observability.metrics import observe_ucwa_request, with_send_metrics
from bridge.outbound.conversation_actions import ConversationActions
from bridge.outbound.holders import ProcessLiveness
from bridge.outbound.messages import MessageStore
from bridge.outbound.outcomes import Outbound
from bridge.outbound.sender import Sender, SendSettings
from bridge.session.client import UcwaClient
from bridge.session.slot import UcwaSlot
from bridge.session.transport import TransportOptions, UcwaTransport
from bridge.ucwa.auth import Credentials
from workers.rq_worker import stopping

log = logging.getLogger("ucwa_bridge.send")

# The Sender of the job runner in this thread (the worker command configures one per runner).
_runner = threading.local()


def configure(sender: Sender) -> None:
    """Install this job runner's Sender (the worker command does this as a runner starts)."""
    _runner.sender = sender


def build_sender(
    settings: Settings,
    send_settings: SendSettings | None = None,
    slot: UcwaSlot | None = None,
    liveness: ProcessLiveness | None = None,
) -> Sender:
    """One sender per configured account, joined so that any of them sends a message as the
    account it was accepted for; the default account's is returned. ``slot``: held for each
    UCWA exchange, shared with the process's other runners; ``liveness``: the process named in
    the send locks it takes."""
    assert settings.accounts, "no UCWA account configured"
    client = connect(settings.redis_url)
    options = TransportOptions.from_settings(settings)
    knobs = replace(send_settings or SendSettings(), ucwa_timeout_s=float(settings.ucwa_timeout_s))
    store = MessageStore(client, record_ttl_s=settings.record_ttl_s)
    senders = []
    for account in settings.accounts:
        credentials = Credentials(account.username, account.password)
        ucwa = UcwaClient(
            credentials,
            UcwaTransport(observer=observe_ucwa_request, options=options, slot=slot),
        )
        outbound = Outbound(
            client,
            store,
            on_final=with_send_metrics(status_events(account.key)),
            account=account.key,
        )
        sender = Sender(
            client,
            ucwa,
            account.key,
            knobs,
            outbound,
            account_id=account.id,
            slot=slot,
            liveness=liveness,
            stop=stopping,
        )
        senders.append((account.default, sender))
    first = next(sender for default, sender in senders if default)
    first.join([sender for _, sender in senders if sender is not first])
    return first


def _current() -> Sender:
    sender: Sender | None = getattr(_runner, "sender", None)
    if sender is None:
        sender = _runner.sender = build_sender(Settings.from_env("worker"))
    return sender


def send_message(message_id: str) -> str:
    outcome = _current().run(message_id)
    job = get_current_job()
    log.info(
        "send attempt: %s",
        outcome,
        extra={
            "message_id": message_id,
            "operation_id": message_id,
            "job_id": job.id if job else None,
        },
    )
    return outcome


def release_message(message_id: str) -> str:
    """A scheduled message's ``send_at`` came: into its line, and started if it is first."""
    outcome = _current().outbound.release(message_id)
    log.info("scheduled message: %s", outcome, extra={"message_id": message_id})
    return outcome


def check_message(message_id: str) -> str:
    outcome = _current().check(message_id)
    log.info("outcome check: %s", outcome, extra={"message_id": message_id})
    return outcome


def conversation_action(conversation_id: str, action: str) -> str:
    """End a conversation or show the bot typing in it (``POST /conversations/<id>/…``)."""
    sender = _current()
    conversation = sender.registry.get(conversation_id)
    account = (conversation.account if conversation else None) or DEFAULT_ID
    sender = sender.peers.get(account, sender)  # the account whose application holds it
    actions = ConversationActions(
        sender.ucwa, sender.sessions, sender.registry, sender.publish_token
    )
    outcome = actions.run(conversation_id, action)
    log.info("conversation %s: %s", action, outcome, extra={"conversation": conversation_id})
    return outcome

"""Acting on a conversation the bot has: end it (stopMessaging) or show the bot typing
(setIsTyping). The API queues one RQ job per request on the send queue; a worker runs it with
the session the poller published, as it runs sends.

Neither action carries a message, so neither can lose or double one: a lost answer to a
typing indicator needs no repair, and ending an already ended conversation changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import redis
from rq import Queue

from bridge.outbound.intake import SEND_QUEUE
from bridge.session.client import UcwaClient
from bridge.session.conversations import Conversation, ConversationRegistry
from bridge.session.store import Session, SessionStore, SessionUnavailable
from bridge.ucwa import errors as ue

log = logging.getLogger("ucwa_bridge.conversations")

ACTION_FUNC = "workers.send.conversation_action"  # a dotted path: bridge never imports workers
ACTION_JOB_TIMEOUT_S = 60
# A typing indicator shown late is worse than none: a job not started by then is dropped.
TYPING_TTL_S = 10
END_TTL_S = 300


class Action(StrEnum):
    END = "end"
    TYPING = "typing"


# The UCWA link each action posts to (stopMessaging_ref.md, setIsTyping_ref.md).
LINK = {Action.END: "stopMessaging", Action.TYPING: "setIsTyping"}


class NotLive(Exception):
    """The conversation is not live on the UCWA server (ended, or from an earlier session)."""


@dataclass(frozen=True)
class Queued:
    conversation: Conversation
    job_id: str


def check_live(conv: Conversation, action: Action) -> None:
    """Raise NotLive unless ``action`` can act on ``conv`` as the registry knows it now."""
    if not conv.alive:
        raise NotLive(f"the conversation has ended ({conv.state})")
    if action is Action.TYPING and conv.messaging_state != "Connected":
        raise NotLive(f"its messaging is {conv.messaging_state}")
    if LINK[action] not in conv.links:
        raise NotLive(f"UCWA offers no {LINK[action]} on it now")


def enqueue(client: redis.Redis, conv: Conversation, action: Action) -> Queued:
    """Check the conversation is live and queue the action for a worker (NotLive otherwise)."""
    check_live(conv, action)
    job = Queue(SEND_QUEUE, connection=client).enqueue(
        ACTION_FUNC,
        conv.id,
        action.value,
        job_timeout=ACTION_JOB_TIMEOUT_S,
        ttl=TYPING_TTL_S if action is Action.TYPING else END_TTL_S,
        result_ttl=0,
        failure_ttl=86_400,
        description=f"{action.value} conversation {conv.id}",
    )
    return Queued(conv, job.id)


class ConversationActions:
    """Runs queued actions in a worker with its pooled UCWA client; ``publish_token`` shares a
    token the request renewed (``Sender.publish_token``)."""

    def __init__(
        self,
        ucwa: UcwaClient,
        sessions: SessionStore,
        registry: ConversationRegistry,
        publish_token: Callable[[Session], None],
    ) -> None:
        self.ucwa = ucwa
        self.sessions = sessions
        self.registry = registry
        self.publish_token = publish_token

    def run(self, conversation_id: str, action_name: str) -> str:
        """What happened, for the job log: done, unknown, not_live, no_session or failed."""
        action = Action(action_name)
        conv = self.registry.get(conversation_id)
        if conv is None:
            return "unknown"
        try:
            session = self.sessions.require()
        except SessionUnavailable as exc:
            log.warning(
                "conversation %s not done: %s", action.value, exc,
                extra={"conversation": conversation_id},
            )  # fmt: skip
            return "no_session"
        try:
            check_live(conv, action)
            if conv.generation != session.generation:
                raise NotLive("it belongs to an earlier UCWA application")
        except NotLive as exc:
            log.info(
                "conversation %s skipped: %s", action.value, exc,
                extra={"conversation": conversation_id},
            )  # fmt: skip
            return "not_live"
        self.ucwa.adopt(session.base_url, session.token, session.token_expires_at)
        try:
            self.ucwa.request("POST", conv.links[LINK[action]], kind=LINK[action])
        except ue.UcwaError as exc:
            log.warning(
                "conversation %s failed: %s", action.value, exc,
                extra={"conversation": conversation_id},
            )  # fmt: skip
            return "failed"
        finally:
            self.publish_token(session)
        log.info("conversation %s done", action.value, extra={"conversation": conversation_id})
        return "done"

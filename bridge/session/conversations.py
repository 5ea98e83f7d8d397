"""The conversation registry: what the poller learned about each UCWA conversation.

Workers read it to choose a warm send (sendMessage), a re-opened one (addMessaging) or a cold one.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from bridge.config.redis_text import text

RETENTION_S = 7 * 86_400


# The only shape of id the bridge hands out; nothing else may name a conversation record, so no
# caller-supplied id can reach the registry's index keys (``conv:active``, ``conv:href:…``).
CONVERSATION_ID = re.compile(r"^conv_[0-9a-f]{24}$")


def conversation_id(account: str, href: str) -> str:
    """A stable public id for a conversation href, so reprocessing an event maps to the same id."""
    digest = hashlib.sha256(f"{account}\n{href}".encode()).hexdigest()
    return f"conv_{digest[:24]}"


@dataclass
class Conversation:
    """One conversation of the bridge's application with one remote participant."""

    id: str
    href: str
    generation: int
    remote: str | None = None
    remote_name: str | None = None
    direction: str = "Outgoing"
    state: str = "Connecting"
    messaging_state: str = "Disconnected"
    thread_id: str | None = None
    subject: str | None = None
    links: dict[str, str] = field(default_factory=dict)
    formats: list[str] = field(default_factory=list)
    first_message: str | None = None
    seen_messages: int = 0
    created_at: float = 0.0
    last_activity: float = 0.0

    @property
    def alive(self) -> bool:
        return self.state not in ("Disconnected", "Deleted")

    def can_send(self, generation: int) -> bool:
        return (
            self.generation == generation
            and self.alive
            and self.messaging_state == "Connected"
            and "sendMessage" in self.links
        )

    def can_add_messaging(self, generation: int) -> bool:
        return (
            self.generation == generation
            and self.alive
            and self.messaging_state == "Disconnected"
            and "addMessaging" in self.links
        )

    def public_view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "remote": self.remote,
            "remote_name": self.remote_name,
            "direction": self.direction,
            "state": self.state,
            "messaging": self.messaging_state,
            "thread_id": self.thread_id,
        }


class ConversationRegistry:
    """Keys: ``conv:<id>`` (JSON), ``conv:href:<href>`` → id, ``conv:remote:<sip>`` → id,
    ``conv:active`` (sorted set of live conversation ids by last activity)."""

    def __init__(self, client: redis.Redis, account: str) -> None:
        self.client = client
        self.account = account

    @staticmethod
    def _key(cid: str) -> str:
        return f"conv:{cid}"

    def id_for(self, href: str) -> str:
        return conversation_id(self.account, href)

    def get(self, cid: str) -> Conversation | None:
        if not CONVERSATION_ID.fullmatch(cid):
            return None
        raw = self.client.get(self._key(cid))
        return _load(text(raw)) if raw else None

    def by_href(self, href: str) -> Conversation | None:
        return self.get(self.id_for(href))

    def by_remote(self, remote: str) -> Conversation | None:
        cid = self.client.get(f"conv:remote:{remote.lower()}")
        return self.get(text(cid)) if cid else None

    def save(self, conv: Conversation, pipe: redis.client.Pipeline) -> None:
        pipe.set(self._key(conv.id), json.dumps(asdict(conv)), ex=RETENTION_S)
        pipe.set(f"conv:href:{conv.href}", conv.id, ex=RETENTION_S)
        if conv.remote:
            pipe.set(f"conv:remote:{conv.remote.lower()}", conv.id, ex=RETENTION_S)
        if conv.alive:
            pipe.zadd("conv:active", {conv.id: conv.last_activity})
            pipe.expire("conv:active", RETENTION_S)  # gone a week after the last live one
        else:
            pipe.zrem("conv:active", conv.id)

    def active(self) -> list[Conversation]:
        ids = [text(cid) for cid in self.client.zrange("conv:active", 0, -1)]
        found = [self.get(cid) for cid in ids]
        return [conv for conv in found if conv is not None]

    def idle(self, older_than: float, now: float | None = None) -> list[Conversation]:
        limit = (now or time.time()) - older_than
        ids = [text(cid) for cid in self.client.zrangebyscore("conv:active", 0, limit)]
        found = [self.get(cid) for cid in ids]
        return [conv for conv in found if conv is not None and conv.alive]

    def forget_live_state(self, pipe: redis.client.Pipeline) -> None:
        """After resync/resume or a new application every known conversation is gone server-side.

        Records stay (a reply to an old conversation reopens it with the same remote), but none
        of them is live any more.
        """
        for conv in self.active():
            conv.state = "Disconnected"
            conv.messaging_state = "Disconnected"
            conv.links = {}
            self.save(conv, pipe)
        pipe.delete("conv:active")


def _load(raw: str) -> Conversation:
    data = json.loads(raw)
    return Conversation(**data)

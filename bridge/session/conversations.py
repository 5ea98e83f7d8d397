"""The conversation registry: what the poller learned about each UCWA conversation.

Workers read it to choose a warm send (sendMessage), a re-opened one (addMessaging) or a cold one.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import redis

from bridge.config.accounts import DEFAULT_ID
from bridge.config.redis_text import text

RETENTION_S = 7 * 86_400
# The newest entries a conversation's message log keeps (both directions), within RETENTION_S.
LOG_CAP = 500
ACTIVE_KEY = "conv:active"  # live conversations by last activity
RECENT_KEY = "conv:recent"  # every conversation of the retention period, by start time
SCAN_PER_PAGE = 300  # index entries one page of conversations reads at most


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
    # The id of the account whose application holds it; None: the default account's.
    account: str | None = None

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

    def api_view(self) -> dict[str, Any]:
        """What ``GET /conversations`` shows: the public view, whether it is live, its times."""
        return {
            **self.public_view(),
            "subject": self.subject,
            "active": self.alive,
            "started_at": _rfc3339(self.created_at),
            "last_activity_at": _rfc3339(self.last_activity),
            "account": self.account or DEFAULT_ID,
        }


# The latest conversation with a person: KEYS the person's index key; ARGV the record key
# prefix. {id, record}, or false when there is none (or its record has expired).
_BY_REMOTE = """
local id = redis.call('GET', KEYS[1])
if not id then return false end
local record = redis.call('GET', ARGV[1] .. id)
if not record then return false end
return {id, record}
"""


class ConversationRegistry:
    """Keys: ``conv:<id>`` (JSON), ``conv:href:<href>`` → id, ``conv:remote:<sip>`` → id,
    ``conv:active`` (sorted set of live conversation ids by last activity). The last two are
    per account: an account other than ``default`` has ``conv:remote:<account>|<sip>`` and
    ``conv:active:<account>``. ``account`` is the account's key (its Redis name), ``account_id``
    its public id; ids and records are shared by all accounts (an id names one application's
    conversation)."""

    def __init__(self, client: redis.Redis, account: str, account_id: str = DEFAULT_ID) -> None:
        self.client = client
        self.account = account
        self.account_id = account_id
        own = account_id != DEFAULT_ID
        self._remote_prefix = f"conv:remote:{account_id}|" if own else "conv:remote:"
        self.active_key = f"{ACTIVE_KEY}:{account_id}" if own else ACTIVE_KEY

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

    def get_many(self, ids: list[str]) -> list[Conversation]:
        """The records of ``ids`` that exist, in one round trip."""
        valid = [cid for cid in ids if CONVERSATION_ID.fullmatch(cid)]
        raws = self.client.mget([self._key(cid) for cid in valid]) if valid else []
        return [_load(text(raw)) for raw in cast(list[bytes | None], raws) if raw]

    def by_href(self, href: str) -> Conversation | None:
        return self.get(self.id_for(href))

    def read_hrefs(self, hrefs: set[str]) -> dict[str, bytes | None]:
        """absolute href → its record as kept (None: none), in one round trip; ``load`` reads
        one, so a caller can set aside the one record that cannot be read."""
        if not hrefs:
            return {}
        ordered = sorted(hrefs)
        raws = self.client.mget([self._key(self.id_for(href)) for href in ordered])
        return dict(zip(ordered, cast(list[bytes | None], raws), strict=True))

    @staticmethod
    def load(raw: bytes | str) -> Conversation:
        """A record as ``read_hrefs`` returns it."""
        return _load(text(raw))

    def by_remote(self, remote: str) -> Conversation | None:
        cid = self.client.get(self._remote_prefix + remote.lower())
        return self.get(text(cid)) if cid else None

    def lookup_command(self, cid: str | None, remote: str) -> tuple[str, ...]:
        """One command that reads the conversation ``cid`` names, or without one the latest
        with ``remote``, to send with others; ``looked_up`` reads its answer. One round trip
        where ``by_remote`` takes two."""
        if cid:
            return ("GET", self._key(cid) if CONVERSATION_ID.fullmatch(cid) else "conv:-")
        # EVAL, not a registered script: a pipeline would first ask whether it is loaded.
        return ("EVAL", _BY_REMOTE, "1", self._remote_prefix + remote.lower(), self._key(""))

    @staticmethod
    def looked_up(answer: Any) -> Conversation | None:
        """The conversation from the answer of ``lookup_command``'s command, if any."""
        if isinstance(answer, list):  # by remote: [id, record]
            cid, answer = answer
            if not CONVERSATION_ID.fullmatch(text(cid)):
                return None
        return _load(text(answer)) if answer else None

    def save(self, conv: Conversation, pipe: redis.client.Pipeline) -> None:
        if conv.account is None and self.account_id != DEFAULT_ID:
            conv.account = self.account_id
        pipe.set(self._key(conv.id), json.dumps(asdict(conv)), ex=RETENTION_S)
        pipe.set(f"conv:href:{conv.href}", conv.id, ex=RETENTION_S)
        if conv.remote:
            pipe.set(self._remote_prefix + conv.remote.lower(), conv.id, ex=RETENTION_S)
        if conv.alive:
            pipe.zadd(self.active_key, {conv.id: conv.last_activity})
            pipe.expire(self.active_key, RETENTION_S)  # gone a week after the last live one
        else:
            pipe.zrem(self.active_key, conv.id)
        # Listed by start time, which never changes, so pages stay put while conversations move.
        # Trimmed first: a conversation that outlives the retention comes back with its save.
        pipe.zremrangebyscore(RECENT_KEY, "-inf", f"({time.time() - RETENTION_S}")
        pipe.zadd(RECENT_KEY, {conv.id: conv.created_at})
        pipe.expire(RECENT_KEY, RETENTION_S)

    def page(
        self, limit: int, before: tuple[float, str] | None = None, active_only: bool = False
    ) -> tuple[list[Conversation], tuple[float, str] | None]:
        """Conversations newest first (by start; live ones only if ``active_only``) after the
        cursor ``before`` (start, id) of the previous page, and the next page's cursor.

        Reads at most ``SCAN_PER_PAGE`` index entries and their records: no scan of the
        keyspace, whatever the number kept. With ``active_only`` a page can hold fewer than
        ``limit`` (even none) and still have a next cursor. Read only.
        """
        top = "+inf" if before is None else str(before[0])
        rows = cast(
            list[tuple[bytes, float]],
            self.client.zrevrangebyscore(
                RECENT_KEY, top, "-inf", start=0, num=SCAN_PER_PAGE, withscores=True
            ),
        )
        found: list[Conversation] = []
        last: tuple[float, str] | None = None
        for raw_id, score in rows:
            cid = text(raw_id)
            if before is not None and score == before[0] and cid >= before[1]:
                continue  # on or above the cursor among conversations started together
            if len(found) == limit:
                return found, last  # there is more
            last = (score, cid)
            conv = self.get(cid)  # None once expired; its entry is trimmed by a later save
            if conv is not None and (not active_only or conv.alive):
                found.append(conv)
        more = len(rows) == SCAN_PER_PAGE and last is not None
        return found, last if more else None

    def active(self) -> list[Conversation]:
        return self.get_many([text(cid) for cid in self.client.zrange(self.active_key, 0, -1)])

    def idle(self, older_than: float, now: float | None = None) -> list[Conversation]:
        limit = (now or time.time()) - older_than
        ids = [text(cid) for cid in self.client.zrangebyscore(self.active_key, 0, limit)]
        return [conv for conv in self.get_many(ids) if conv.alive]

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
        pipe.delete(self.active_key)


def log_key(cid: str) -> str:
    return f"conv:{cid}:log"


class ConversationLog:
    """The messages of each conversation, both ways, for ``GET /conversations/<id>``.

    ``conv:<id>:log`` is a sorted set by time of JSON entries: an outbound message's id (its
    status is read from its record when shown) or an inbound message's sender and text. Entries
    older than RETENTION_S are trimmed on every write, at most LOG_CAP are kept, and the key
    expires RETENTION_S after its last write.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    @staticmethod
    def add(pipe: redis.client.Pipeline, cid: str, entry: dict[str, Any], at: float) -> None:
        """Queue ``entry`` on ``pipe`` (in MULTI); the same entry twice is kept once."""
        if not CONVERSATION_ID.fullmatch(cid):
            return
        key = log_key(cid)
        member = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        pipe.zadd(key, {member: at})
        pipe.zremrangebyscore(key, "-inf", f"({at - RETENTION_S}")
        pipe.zremrangebyrank(key, 0, -LOG_CAP - 1)
        pipe.expire(key, RETENTION_S)

    def entries(self, cid: str, limit: int = LOG_CAP) -> list[dict[str, Any]]:
        """The newest ``limit`` entries, oldest first."""
        if not CONVERSATION_ID.fullmatch(cid):
            return []
        rows = self.client.zrange(log_key(cid), -limit, -1)
        return [json.loads(text(row)) for row in rows]


def _rfc3339(epoch: float) -> str | None:
    if not epoch:
        return None
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def _load(raw: str) -> Conversation:
    data = json.loads(raw)
    return Conversation(**data)

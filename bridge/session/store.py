"""The UCWA session the poller publishes in Redis for stateless workers.

Holds the token, the application's links and liveness; the token never appears in reprs.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from bridge.config.redis_text import text_map


@dataclass
class Session:
    """One account's live UCWA application, as workers need it."""

    account: str
    generation: int
    base_url: str
    application_href: str
    token: str = field(repr=False)
    token_expires_at: float
    token_url: str
    links: dict[str, str] = field(default_factory=dict)
    state: str = "ready"
    poller: str = ""
    fence: int = 0
    updated_at: float = 0.0

    def link(self, rel: str) -> str | None:
        return self.links.get(rel)

    def to_redis(self) -> dict[Any, Any]:
        data = asdict(self)
        data["links"] = json.dumps(self.links)
        return {key: str(value) for key, value in data.items()}

    @classmethod
    def from_redis(cls, raw: object) -> Session:
        """The stored session; a hash with only a ``state`` (set before any session was
        published, e.g. ``down`` while the first bootstrap fails) reads as an empty session."""
        data = text_map(raw)
        return cls(
            account=data.get("account", ""),
            generation=int(data.get("generation") or 0),
            base_url=data.get("base_url", ""),
            application_href=data.get("application_href", ""),
            token=data.get("token", ""),
            token_expires_at=float(data.get("token_expires_at") or 0),
            token_url=data.get("token_url", ""),
            links=json.loads(data.get("links") or "{}"),
            state=data.get("state", "ready"),
            poller=data.get("poller", ""),
            fence=int(data.get("fence") or 0),
            updated_at=float(data.get("updated_at") or 0),
        )


class SessionUnavailable(RuntimeError):
    """No live poller has published a usable session; the caller should retry later."""


class SessionStore:
    """``session:<account>`` (hash) plus ``session:<account>:pulse`` (last event GET time)."""

    def __init__(self, client: redis.Redis, account: str) -> None:
        self.client = client
        self.account = account
        self.key = f"session:{account}"
        self.pulse_key = f"session:{account}:pulse"

    def publish(self, session: Session, pipe: redis.client.Pipeline | None = None) -> None:
        session.updated_at = time.time()
        target = pipe if pipe is not None else self.client
        target.delete(self.key)
        target.hset(self.key, mapping=session.to_redis())

    def load(self) -> Session | None:
        raw = self.client.hgetall(self.key)
        if not raw:
            return None
        return Session.from_redis(raw)

    def require(self) -> Session:
        """The session, if a live poller holds the lease and reported it ready; else raise."""
        with self.client.pipeline(transaction=False) as pipe:  # one round trip, every send
            self.queue_read(pipe)
            raw, leased = pipe.execute()
        return self.required(raw, leased)

    def queue_read(self, pipe: redis.client.Pipeline) -> None:
        """Queue on ``pipe`` the two reads whose answers ``required`` takes, in that order."""
        pipe.hgetall(self.key)
        pipe.exists(f"poller:lease:{self.account}")

    @staticmethod
    def required(raw: dict[bytes, bytes], leased: int) -> Session:
        """``require`` from the answers of ``queue_read``."""
        session = Session.from_redis(raw) if raw else None
        if session is None or session.state != "ready" or not session.base_url:
            state = "missing" if session is None else session.state
            raise SessionUnavailable(f"UCWA session is {state}")
        if not leased:
            raise SessionUnavailable("no live poller holds the UCWA session")
        return session

    def set_state(self, state: str, pipe: redis.client.Pipeline | None = None) -> None:
        (pipe if pipe is not None else self.client).hset(self.key, "state", state)

    def replace_token(self, generation: int, token: str, expires_at: float) -> bool:
        """Store a refreshed token if the session is still the same generation."""
        with self.client.pipeline() as pipe:
            try:
                pipe.watch(self.key)
                current = pipe.hget(self.key, "generation")
                if current is None or int(current) != generation:
                    return False
                pipe.multi()
                pipe.hset(self.key, mapping={"token": token, "token_expires_at": str(expires_at)})
                pipe.execute()
                return True
            except redis.WatchError:
                return False

    def pulse(self, now: float | None = None, pipe: redis.client.Pipeline | None = None) -> None:
        (pipe if pipe is not None else self.client).set(self.pulse_key, str(now or time.time()))

    def last_pulse(self) -> float | None:
        value = self.client.get(self.pulse_key)
        return float(value) if value is not None else None

"""Idempotency-Key handling: an atomic claim, then the first response stored for 24 h.

Key ``idem:<api key id>:<sha256 of Idempotency-Key>`` holds JSON ``{state, token, fingerprint,
response?}``; ``processing`` claims expire after a short lock TTL so a crash never blocks a key.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.client import Pipeline

from bridge.api.problems import (
    IDEMPOTENCY_IN_PROGRESS,
    IDEMPOTENCY_KEY_REUSED,
    INVALID_HEADER,
    FieldError,
    Problem,
)
from bridge.outbound.intake import ClaimWrite, IntakeConflict
from bridge.outbound.messages import MessageRecord

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotency-Replayed"
VALID_KEY = re.compile(r"^[!-~]{1,255}$")  # visible ASCII

_RELEASE = """
local raw = redis.call('GET', KEYS[1])
if raw and cjson.decode(raw)['token'] == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def fingerprint(method: str, path: str, body: Any) -> str:
    """A hash of the request that ignores key order and whitespace in the JSON body."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def validate_key(value: str) -> str:
    if not VALID_KEY.fullmatch(value):
        raise Problem(
            INVALID_HEADER,
            f"{HEADER} must be 1 to 255 visible ASCII characters",
            errors=[FieldError(HEADER, "must be 1 to 255 visible ASCII characters", "invalid")],
        )
    return value


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: str
    headers: Mapping[str, str] = field(default_factory=dict)


Render = Callable[[MessageRecord], StoredResponse]


@dataclass
class Claim:
    """An in-progress claim on a key; pass it to ``Intake.submit`` as the transaction guard."""

    key: str
    token: str
    fingerprint: str
    ttl_s: int
    render: Render
    _store: IdempotencyStore

    @property
    def watched_keys(self) -> Sequence[str]:
        return (self.key,)

    def check(self, pipe: Pipeline) -> None:
        raw = pipe.get(self.key)
        if raw is None or json.loads(raw).get("token") != self.token:
            raise IntakeConflict("the idempotency claim expired before the message was stored")

    def write(self, pipe: Pipeline, record: MessageRecord) -> None:
        pipe.set(self.key, self.done(self.render(record)), ex=self.ttl_s)

    def done(self, response: StoredResponse) -> str:
        """The key's value once the request has been answered with ``response``."""
        return json.dumps(
            {
                "state": "done",
                "token": self.token,
                "fingerprint": self.fingerprint,
                "response": {
                    "status": response.status,
                    "body": response.body,
                    "headers": dict(response.headers),
                },
            }
        )

    def completion(self, response: StoredResponse) -> ClaimWrite:
        """This claim, completed with ``response``, for a batch intake to check and write."""
        return ClaimWrite(self.key, self.token, self.done(response), self.ttl_s)

    def release(self) -> None:
        """Give the key back after a failure, unless someone else holds it by now."""
        self._store.release(self)


class IdempotencyStore:
    def __init__(self, client: redis.Redis, ttl_s: int, lock_ttl_s: int) -> None:
        self._redis = client
        self.ttl_s = ttl_s
        self.lock_ttl_s = lock_ttl_s
        self._release = client.register_script(_RELEASE)

    @staticmethod
    def redis_key(scope: str, idempotency_key: str) -> str:
        digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
        return f"idem:{scope}:{digest}"

    def begin(
        self, scope: str, idempotency_key: str, request_fingerprint: str, render: Render
    ) -> Claim | StoredResponse:
        """Claim the key, or return the stored first response; raise 409/422 problems.

        A SET NX whose answer was lost (the connection dropped after Redis ran it, and redis-py
        sent it again) finds the key claimed with this call's own token: it is this claim."""
        key = self.redis_key(scope, idempotency_key)
        token = uuid.uuid4().hex
        claim = json.dumps(
            {"state": "processing", "token": token, "fingerprint": request_fingerprint}
        )
        for _ in range(5):
            if self._redis.set(key, claim, nx=True, ex=self.lock_ttl_s):
                return Claim(key, token, request_fingerprint, self.ttl_s, render, self)
            raw = self._redis.get(key)
            if raw is None:
                continue  # the other claim expired between SET NX and GET
            existing = json.loads(raw)
            if existing.get("token") == token:
                return Claim(key, token, request_fingerprint, self.ttl_s, render, self)
            if existing["fingerprint"] != request_fingerprint:
                raise Problem(
                    IDEMPOTENCY_KEY_REUSED,
                    f"this {HEADER} was used with a different request body",
                    errors=[FieldError(HEADER, "already used with a different request", "reused")],
                )
            if existing["state"] == "processing":
                raise Problem(
                    IDEMPOTENCY_IN_PROGRESS,
                    f"the first request with this {HEADER} has not finished; retry later",
                    headers={"Retry-After": "1"},
                )
            stored = existing["response"]
            return StoredResponse(stored["status"], stored["body"], stored["headers"])
        raise Problem(IDEMPOTENCY_IN_PROGRESS, headers={"Retry-After": "1"})

    def release(self, claim: Claim) -> None:
        self._release(keys=[claim.key], args=[claim.token])

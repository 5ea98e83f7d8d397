"""Bearer API-key authentication with scopes, compared in constant time.

Keys are never logged or echoed; callers are identified by ``ApiKey.key_id`` only.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from bridge.api.problems import FORBIDDEN, UNAUTHORIZED, Problem
from bridge.config.settings import ApiKey, Scope

ANONYMOUS = "anonymous"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="ucwa-bridge"'}


@dataclass(frozen=True)
class Caller:
    """Who made the request: ``key_id`` scopes idempotency keys."""

    key_id: str
    scopes: frozenset[Scope]
    # The accounts the key may send from, its default first; None: every account.
    accounts: tuple[str, ...] | None = None


class Authenticator:
    """Checks ``Authorization: Bearer <key>`` against every configured key."""

    def __init__(self, keys: Sequence[ApiKey], disabled: bool = False) -> None:
        if not keys and not disabled:
            raise ValueError("no API keys configured and authentication not disabled")
        self._disabled = disabled
        # Digests have one length, so compare_digest's time does not depend on the key length.
        self._keys = [(hashlib.sha256(key.secret.encode()).digest(), key) for key in keys]

    def authenticate(self, authorization: str | None, scope: Scope) -> Caller:
        """Return the caller, or raise a 401/403 ``Problem``."""
        if self._disabled:
            return Caller(ANONYMOUS, frozenset(Scope))
        token = _bearer_token(authorization)
        if token is None:
            raise Problem(
                UNAUTHORIZED, "send 'Authorization: Bearer <API key>'", headers=_CHALLENGE
            )
        presented = hashlib.sha256(token.encode()).digest()
        match: ApiKey | None = None
        # No early exit: every configured key is compared, so timing does not reveal which matched.
        for digest, key in self._keys:
            if hmac.compare_digest(presented, digest):
                match = key
        if match is None:
            raise Problem(
                UNAUTHORIZED,
                "the API key is not valid",
                headers={
                    "WWW-Authenticate": _CHALLENGE["WWW-Authenticate"] + ', error="invalid_token"'
                },
            )
        if not match.allows(scope):
            raise Problem(FORBIDDEN, f"this API key lacks the {scope.value!r} scope")
        return Caller(match.key_id, match.scopes, match.accounts)


def _bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token

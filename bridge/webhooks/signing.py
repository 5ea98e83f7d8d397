"""Standard Webhooks request signing: the ``webhook-id``/``-timestamp``/``-signature`` headers.

Pure apart from the HMAC: signatures come from ``standardwebhooks.Webhook(secret).sign``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime

from standardwebhooks import Webhook


def signature_header(msg_id: str, timestamp: int, body: bytes, secrets: Sequence[str]) -> str:
    """``v1,<base64>`` per secret, space-separated (several secrets during a rotation)."""
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    text = body.decode("utf-8")
    return " ".join(
        _signer(secret).sign(msg_id=msg_id, timestamp=moment, data=text) for secret in secrets
    )


@functools.lru_cache(maxsize=64)
def _signer(secret: str) -> Webhook:
    # A secret's key is decoded once, not once per delivery.
    return Webhook(secret)


def signed_headers(
    msg_id: str, timestamp: int, body: bytes, secrets: Sequence[str]
) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt.

    ``msg_id`` is the event id (stable across retries, so receivers can dedupe);
    ``timestamp`` is the attempt time in unix seconds.
    """
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": signature_header(msg_id, int(timestamp), body, secrets),
    }

"""The exception tree of the webhook package, so callers can catch the level they need.

WebhookError
├── WebhookConfigError (also ValueError)  bad endpoint or delivery settings, one line
├── SsrfBlocked                           a target address that may not be contacted
├── AddressResolutionError                the target host did not resolve (retryable)
├── DeliveryNotFound                      no delivery record with that id
├── DeliveryInFlight                      the delivery is queued or being attempted
└── EndpointNotFound                      no configured endpoint with that id
"""

from __future__ import annotations


class WebhookError(Exception):
    """Base of every error raised by the webhook package."""


class WebhookConfigError(WebhookError, ValueError):
    """Invalid webhook configuration; the message is one line naming the variable."""


class SsrfBlocked(WebhookError):
    """The endpoint's host resolves to an address that may not be contacted."""

    def __init__(self, host: str, address: str, category: str) -> None:
        super().__init__(f"{host} resolves to {address} ({category})")
        self.host = host
        self.address = address
        self.category = category


class AddressResolutionError(WebhookError):
    """The endpoint's host could not be resolved."""


class DeliveryNotFound(WebhookError):
    """No delivery record with the given id (never existed or past retention)."""


class DeliveryInFlight(WebhookError):
    """The delivery is queued or being attempted; it cannot be re-enqueued now."""


class EndpointNotFound(WebhookError):
    """No configured endpoint with the given id."""

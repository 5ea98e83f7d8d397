"""The answers of the webhook admin operations as pydantic models: the OpenAPI document's
schemas for them come from here, and the tests check real answers against them.

Views are built as dicts where the data lives (``bridge.webhooks.admin``); these models only
describe them, with ``extra="forbid"`` so a field added there without being published here
fails the tests.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


DeliveryState = Literal["pending", "failed", "succeeded", "dead"]


class Delivery(_Strict):
    id: str = Field(description="dlv_…: one (event, endpoint) pair")
    event_id: str
    event_type: str
    endpoint_id: str
    status: DeliveryState
    reason: str | None = Field(description="why it failed or died, e.g. http_500, ssrf_blocked")
    attempt_count: int
    created_at: str | None
    updated_at: str | None
    next_attempt_at: str | None = Field(description="when pending or failed: the next try")
    in_flight: bool = Field(description="an attempt is running now")


class DeliveryAttempt(_Strict):
    at: str | None
    try_no: int = Field(alias="try")
    status_code: int | None
    error: str | None
    latency_ms: int | float | None
    response_excerpt: str | None = Field(description="the first 1 KB of the answer")


class DeliveryDetail(Delivery):
    attempts: list[DeliveryAttempt]
    payload: Any = Field(description="the event body that was signed and sent, while kept")


class DeliveryPage(_Strict):
    items: list[Delivery]
    next_cursor: str | None


class EndpointDisabled(_Strict):
    reason: str
    at: str | None
    delivery_id: str | None


class Endpoint(_Strict):
    id: str
    url: str = Field(description="credentials in it shown as [REDACTED]")
    event_types: list[str] | None = Field(description="as configured; null: the defaults")
    effective_event_types: list[str]
    enabled: bool = Field(description="as configured")
    allow_private: bool = Field(description="what delivery applies")
    accounts: list[str] | None = Field(
        description="the accounts whose events it receives; null: every account's"
    )
    disabled: EndpointDisabled | None = Field(description="set when a 410 turned it off")
    active: bool = Field(description="enabled and not disabled: deliveries go out")


class EndpointList(_Strict):
    items: list[Endpoint]


class ReplayResult(_Strict):
    replayed: int = Field(description="deliveries queued again")


MODELS: tuple[type[BaseModel], ...] = (
    DeliveryPage,
    DeliveryDetail,
    Delivery,
    EndpointList,
    Endpoint,
    ReplayResult,
)

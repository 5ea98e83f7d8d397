"""Configured webhook endpoints: the ``WebhookEndpoint`` value object and its loaders.

Sources: ``BRIDGE_WEBHOOKS`` (JSON list), ``BRIDGE_WEBHOOKS_FILE`` (YAML/JSON) or the single
``BRIDGE_WEBHOOK_URL`` + ``BRIDGE_WEBHOOK_SECRET`` (+ ``BRIDGE_WEBHOOK_EVENTS``) form.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from bridge.config.accounts import ACCOUNT_ID
from bridge.webhooks.errors import WebhookConfigError
from bridge.webhooks.events import ALL_EVENT_TYPES, DEFAULT_EVENT_TYPES
from bridge.webhooks.settings import WebhookSettings

_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
SECRET_PREFIX = "whsec_"


@dataclass(frozen=True)
class WebhookEndpoint:
    """One receiver. ``event_types`` None means the default set (everything but typing/ended).

    Secrets are kept out of ``repr`` and ``public_view``; several secrets mean a rotation
    in progress and every request carries one signature per secret.
    """

    id: str
    url: str
    secrets: Sequence[str] = field(repr=False)
    event_types: frozenset[str] | None = None
    enabled: bool = True
    allow_private: bool = False
    # The ids of the accounts whose events it receives; None: every account's.
    accounts: frozenset[str] | None = None

    def __post_init__(self) -> None:
        where = f"endpoint {self.id!r}"
        if not isinstance(self.id, str) or not _ID.match(self.id):
            raise WebhookConfigError(f"{where}: id must match [A-Za-z0-9_.-]{{1,64}}")
        check_url(self.url, where)
        secrets = tuple(self.secrets)
        if not secrets:
            raise WebhookConfigError(f"{where}: at least one secret is required")
        for secret in secrets:
            check_secret(secret, where)
        object.__setattr__(self, "secrets", secrets)
        if self.event_types is not None:
            types = frozenset(self.event_types)
            unknown = sorted(types - ALL_EVENT_TYPES)
            if unknown:
                raise WebhookConfigError(f"{where}: unknown event types {', '.join(unknown)}")
            object.__setattr__(self, "event_types", types)

    def wants(self, event_type: str, account: str | None = None) -> bool:
        """Whether it receives events of ``event_type`` about ``account`` (an account id)."""
        types = DEFAULT_EVENT_TYPES if self.event_types is None else self.event_types
        if self.accounts is not None and account is not None and account not in self.accounts:
            return False
        return event_type in types

    def public_view(self) -> dict[str, Any]:
        """What may be shown to operators: everything but the secrets."""
        return {
            "id": self.id,
            "url": self.url,
            "event_types": sorted(self.event_types) if self.event_types is not None else None,
            "effective_event_types": sorted(
                DEFAULT_EVENT_TYPES if self.event_types is None else self.event_types
            ),
            "enabled": self.enabled,
            "allow_private": self.allow_private,
            "accounts": sorted(self.accounts) if self.accounts is not None else None,
        }


def check_url(url: object, where: str) -> None:
    if not isinstance(url, str):
        raise WebhookConfigError(f"{where}: url must be a string")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookConfigError(f"{where}: url must be an absolute http or https URL")
    try:
        _ = parts.port
    except ValueError:
        raise WebhookConfigError(f"{where}: url has an invalid port") from None


def check_secret(secret: object, where: str) -> None:
    # Never echo the secret itself in the message.
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise WebhookConfigError(f"{where}: each secret must be a string starting with whsec_")
    try:
        raw = base64.b64decode(secret[len(SECRET_PREFIX) :] + "==", validate=False)
    except (binascii.Error, ValueError):
        raise WebhookConfigError(f"{where}: a secret is not valid base64 after whsec_") from None
    if len(raw) < 16:
        raise WebhookConfigError(f"{where}: a secret must decode to at least 16 bytes")


def load_endpoints(env: Mapping[str, str]) -> list[WebhookEndpoint]:
    """Read the endpoint list from the first configured source; [] when none is set."""
    sources = [
        n
        for n in ("BRIDGE_WEBHOOKS", "BRIDGE_WEBHOOKS_FILE", "BRIDGE_WEBHOOK_URL")
        if env.get(n, "").strip()
    ]
    if len(sources) > 1:
        raise WebhookConfigError(f"{sources[0]}: set only one of {', '.join(sources)}")
    if not sources:
        if env.get("BRIDGE_WEBHOOK_SECRET", "").strip():
            raise WebhookConfigError("BRIDGE_WEBHOOK_URL: required with BRIDGE_WEBHOOK_SECRET")
        return []
    source = sources[0]
    if source == "BRIDGE_WEBHOOKS":
        try:
            items = json.loads(env[source])
        except json.JSONDecodeError as exc:
            raise WebhookConfigError(f"{source}: not valid JSON ({exc.msg})") from None
        return _from_items(items, source)
    if source == "BRIDGE_WEBHOOKS_FILE":
        return _from_items(_read_file(env[source].strip()), source)
    return [_single(env)]


def webhook_config(
    env: Mapping[str, str] | None = None,
) -> tuple[list[WebhookEndpoint], WebhookSettings]:
    """Endpoints and delivery settings (``os.environ`` by default); raises WebhookConfigError
    naming the variable."""
    values = os.environ if env is None else env
    return load_endpoints(values), WebhookSettings.from_env(values)


def _read_file(path: str) -> Any:
    name = "BRIDGE_WEBHOOKS_FILE"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise WebhookConfigError(f"{name}: cannot read {path} ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)  # YAML is a superset of JSON
    except yaml.YAMLError:
        raise WebhookConfigError(f"{name}: {path} is neither valid YAML nor JSON") from None
    if isinstance(data, dict) and "endpoints" in data:
        return data["endpoints"]
    return data


def _single(env: Mapping[str, str]) -> WebhookEndpoint:
    secret = env.get("BRIDGE_WEBHOOK_SECRET", "").strip()
    if not secret:
        raise WebhookConfigError("BRIDGE_WEBHOOK_SECRET: required with BRIDGE_WEBHOOK_URL")
    events_raw = env.get("BRIDGE_WEBHOOK_EVENTS", "").strip()
    events = frozenset(e.strip() for e in events_raw.split(",") if e.strip()) or None
    try:
        return WebhookEndpoint(
            id="default",
            url=env["BRIDGE_WEBHOOK_URL"].strip(),
            secrets=secret.replace(",", " ").split(),
            event_types=events,
        )
    except WebhookConfigError as exc:
        raise WebhookConfigError(f"BRIDGE_WEBHOOK_URL: {exc}") from None


def _from_items(items: Any, source: str) -> list[WebhookEndpoint]:
    if not isinstance(items, list):
        raise WebhookConfigError(f"{source}: expected a list of endpoint objects")
    endpoints: list[WebhookEndpoint] = []
    for index, item in enumerate(items):
        where = f"{source}[{index}]"
        if not isinstance(item, dict):
            raise WebhookConfigError(f"{where}: expected an object")
        try:
            endpoints.append(_from_mapping(item, where))
        except WebhookConfigError as exc:
            message = str(exc)
            raise WebhookConfigError(
                message if message.startswith(where) else f"{where}: {message}"
            ) from None
    _check_unique((e.id for e in endpoints), source)
    return endpoints


def _from_mapping(item: Mapping[str, Any], where: str) -> WebhookEndpoint:
    known = {
        "id",
        "url",
        "secret",
        "secrets",
        "event_types",
        "events",
        "enabled",
        "allow_private",
        "accounts",
    }
    unknown = sorted(set(item) - known)
    if unknown:
        raise WebhookConfigError(f"{where}: unknown keys {', '.join(unknown)}")
    for required in ("id", "url"):
        if required not in item:
            raise WebhookConfigError(f"{where}.{required}: required")
    secrets = item.get("secrets", item.get("secret"))
    if isinstance(secrets, str):
        secrets = [secrets]
    if not isinstance(secrets, list) or not secrets:
        raise WebhookConfigError(f"{where}.secrets: a non-empty list of whsec_ secrets is required")
    types = item.get("event_types", item.get("events"))
    if types is not None and not (
        isinstance(types, list) and all(isinstance(t, str) for t in types)
    ):
        raise WebhookConfigError(f"{where}.event_types: expected a list of event type names")
    for flag in ("enabled", "allow_private"):
        if flag in item and not isinstance(item[flag], bool):
            raise WebhookConfigError(f"{where}.{flag}: expected true or false")
    accounts = item.get("accounts")
    if accounts is not None and not (
        isinstance(accounts, list)
        and accounts
        and all(isinstance(a, str) and ACCOUNT_ID.fullmatch(a) for a in accounts)
    ):
        raise WebhookConfigError(f"{where}.accounts: expected a non-empty list of account ids")
    return WebhookEndpoint(
        id=str(item["id"]),
        url=item["url"],
        secrets=secrets,
        event_types=frozenset(types) if types is not None else None,
        enabled=item.get("enabled", True),
        allow_private=item.get("allow_private", False),
        accounts=frozenset(accounts) if accounts is not None else None,
    )


def _check_unique(ids: Iterable[str], source: str) -> None:
    seen: set[str] = set()
    for endpoint_id in ids:
        if endpoint_id in seen:
            raise WebhookConfigError(f"{source}: duplicate endpoint id {endpoint_id!r}")
        seen.add(endpoint_id)

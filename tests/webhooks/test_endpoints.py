"""Endpoint configuration: sources, validation messages, secrets kept out of sight."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.webhooks.endpoints import WebhookEndpoint, load_endpoints
from bridge.webhooks.errors import WebhookConfigError
from bridge.webhooks.settings import WebhookSettings
from tests.webhooks.harness import new_secret

SECRET = new_secret()


def test_json_list_with_filters_and_rotation() -> None:
    second = new_secret()
    env = {
        "BRIDGE_WEBHOOKS": json.dumps(
            [
                {"id": "ops", "url": "https://ops.example/hook", "secrets": [SECRET, second]},
                {
                    "id": "typing",
                    "url": "http://t.example/",
                    "secret": SECRET,
                    "event_types": ["conversation.typing"],
                    "enabled": False,
                },
            ]
        )
    }
    ops, typing = load_endpoints(env)
    assert ops.secrets == (SECRET, second) and ops.event_types is None
    assert ops.wants("message.received") and not ops.wants("conversation.typing")
    assert typing.wants("conversation.typing") and not typing.wants("message.received")
    assert typing.enabled is False


def test_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "webhooks.yaml"
    path.write_text(
        f"endpoints:\n  - id: ops\n    url: https://ops.example/hook\n"
        f"    secrets: [{SECRET}]\n    allow_private: true\n"
    )
    [ops] = load_endpoints({"BRIDGE_WEBHOOKS_FILE": str(path)})
    assert ops.allow_private and ops.url == "https://ops.example/hook"


def test_single_endpoint_form() -> None:
    [ep] = load_endpoints(
        {
            "BRIDGE_WEBHOOK_URL": "https://x.example/h",
            "BRIDGE_WEBHOOK_SECRET": SECRET,
            "BRIDGE_WEBHOOK_EVENTS": "message.received, conversation.ended",
        }
    )
    assert ep.id == "default"
    assert ep.event_types == frozenset({"message.received", "conversation.ended"})


@pytest.mark.parametrize(
    ("env", "starts"),
    [
        ({"BRIDGE_WEBHOOKS": "[{"}, "BRIDGE_WEBHOOKS: not valid JSON"),
        (
            {"BRIDGE_WEBHOOKS": '[{"id": "a", "url": "ftp://x/", "secrets": ["whsec_AAAA"]}]'},
            "BRIDGE_WEBHOOKS[0]",
        ),
        (
            {
                "BRIDGE_WEBHOOKS": json.dumps(
                    [{"id": "a", "url": "https://x/", "secrets": ["nope"]}]
                )
            },
            "BRIDGE_WEBHOOKS[0]: endpoint 'a': each secret must be a string starting with whsec_",
        ),
        (
            {
                "BRIDGE_WEBHOOKS": json.dumps(
                    [
                        {
                            "id": "a",
                            "url": "https://x/",
                            "secrets": [SECRET],
                            "event_types": ["message.bogus"],
                        }
                    ]
                )
            },
            "BRIDGE_WEBHOOKS[0]: endpoint 'a': unknown event types message.bogus",
        ),
        ({"BRIDGE_WEBHOOK_SECRET": SECRET}, "BRIDGE_WEBHOOK_URL: required"),
        ({"BRIDGE_WEBHOOK_URL": "https://x/"}, "BRIDGE_WEBHOOK_SECRET: required"),
        ({"BRIDGE_WEBHOOKS_FILE": "/nonexistent/webhooks.yaml"}, "BRIDGE_WEBHOOKS_FILE: cannot"),
        (
            {"BRIDGE_WEBHOOKS": "[]", "BRIDGE_WEBHOOK_URL": "https://x/"},
            "BRIDGE_WEBHOOKS: set only one",
        ),
    ],
)
def test_errors_are_one_line_naming_the_variable(env: dict[str, str], starts: str) -> None:
    with pytest.raises(WebhookConfigError) as info:
        load_endpoints(env)
    message = str(info.value)
    assert message.startswith(starts) and "\n" not in message
    assert SECRET not in message


def test_duplicate_ids_rejected() -> None:
    item = {"id": "a", "url": "https://x.example/", "secrets": [SECRET]}
    with pytest.raises(WebhookConfigError, match="duplicate endpoint id 'a'"):
        load_endpoints({"BRIDGE_WEBHOOKS": json.dumps([item, item])})


def test_secrets_never_in_repr_or_public_view() -> None:
    ep = WebhookEndpoint("a", "https://x.example/", [SECRET])
    assert SECRET not in repr(ep) and SECRET not in str(ep)
    assert SECRET not in json.dumps(ep.public_view())


def test_settings_from_env() -> None:
    settings = WebhookSettings.from_env(
        {"BRIDGE_WEBHOOK_SCHEDULE_S": "1, 2.5,10", "BRIDGE_WEBHOOK_TIMEOUT_S": "3"}
    )
    assert settings.schedule_s == (1, 2.5, 10) and settings.timeout_s == 3
    assert WebhookSettings.from_env({}).schedule_s == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert WebhookSettings.from_env({"BRIDGE_WEBHOOK_SCHEDULE_S": "none"}).schedule_s == ()
    with pytest.raises(WebhookConfigError, match=r"^BRIDGE_WEBHOOK_TIMEOUT_S"):
        WebhookSettings.from_env({"BRIDGE_WEBHOOK_TIMEOUT_S": "soon"})
    with pytest.raises(WebhookConfigError, match=r"^BRIDGE_WEBHOOK_ALLOW_PRIVATE"):
        WebhookSettings.from_env({"BRIDGE_WEBHOOK_ALLOW_PRIVATE": "maybe"})

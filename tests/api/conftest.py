"""Fixtures for the API tests: settings, an app bound to the session's real Redis, keys."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from bridge.api import create_app
from bridge.config.settings import Settings

SEND_AND_READ_KEY = "all-rights-key-0123456789"
SEND_ONLY_KEY = "send-only-key-0123456789"
READ_ONLY_KEY = "read-only-key-0123456789"
API_KEYS = f"{SEND_AND_READ_KEY},{SEND_ONLY_KEY}:send,{READ_ONLY_KEY}:read"


def bearer(key: str = SEND_AND_READ_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


MakeSettings = Callable[..., Settings]


@pytest.fixture()
def make_settings(redis_url: str) -> MakeSettings:
    def make(**overrides: str) -> Settings:
        env = {"BRIDGE_REDIS_URL": redis_url, "BRIDGE_API_KEYS": API_KEYS}
        env.update({f"BRIDGE_{name.upper()}": value for name, value in overrides.items()})
        return Settings.from_env("api", env)

    return make


@pytest.fixture()
def settings(make_settings: MakeSettings) -> Settings:
    return make_settings(max_body_bytes="4096", max_message_chars="1000")


@pytest.fixture()
def app(settings: Settings, redis_client: redis.Redis) -> Flask:
    return create_app(settings, redis_client)


@pytest.fixture()
def client(app: Flask) -> FlaskClient:
    return app.test_client()

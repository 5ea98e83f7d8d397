"""Fixtures for the API tests: settings, an app bound to the session's real Redis, keys, and
the API under a real gunicorn started the way ``ucwa-bridge api`` starts it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import requests
from flask import Flask
from flask.testing import FlaskClient

from bridge.api import create_app
from bridge.config.settings import Settings
from bridge.demo import listen

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


@pytest.fixture()
def fuzz_client(make_settings: MakeSettings, redis_client: redis.Redis) -> FlaskClient:
    """As ``client``, without the rate limit: generated requests must not turn into 429s."""
    settings = make_settings(max_body_bytes="4096", max_message_chars="1000", rate_limit="off")
    return create_app(settings, redis_client).test_client()


@contextlib.contextmanager
def served_api(redis_url: str, **variables: str) -> Iterator[int]:
    """``ucwa-bridge api`` with one gunicorn worker and these BRIDGE_* ``variables``, on a port
    bound here and handed over (no other process can take it first); its port, once it serves."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update(BRIDGE_REDIS_URL=redis_url, BRIDGE_API_KEYS=API_KEYS, BRIDGE_API_WORKERS="1")
    env.update({f"BRIDGE_{name}": value for name, value in variables.items()})
    with listen(0, "API") as sock:
        port = sock.getsockname()[1]
        process = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "api", "--bind", f"fd://{sock.fileno()}"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(sock.fileno(),),
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except (requests.ConnectionError, requests.Timeout):  # not serving yet
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture()
def gunicorn_api(redis_url: str, redis_client: redis.Redis) -> Iterator[int]:
    with served_api(
        redis_url,
        MAX_BODY_BYTES="4096",
        API_LIMIT_REQUEST_LINE="200",
        API_LIMIT_REQUEST_FIELDS="12",
        API_LIMIT_REQUEST_FIELD_SIZE="300",
        LOG_LEVEL="WARNING",
    ) as port:
        yield port


def walk_pages(
    client: FlaskClient,
    path: str,
    query: str = "",
    between: Callable[[int], None] | None = None,
    key: str = READ_ONLY_KEY,
) -> list[str]:
    """Every item id of a cursor-paged listing (``path`` answers ``items`` and
    ``next_cursor``), over all pages; ``between(page_no)`` runs after each page."""
    seen: list[str] = []
    cursor = None
    for page_no in range(10_000):
        suffix = f"&cursor={cursor}" if cursor else ""
        answer = client.get(f"{path}?{query}{suffix}", headers=bearer(key))
        assert answer.status_code == 200, answer.get_data(as_text=True)
        page = answer.get_json()
        seen += [item["id"] for item in page["items"]]
        if between is not None:
            between(page_no)
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("no end of pages")


def get_ok(client: FlaskClient, path: str, key: str = READ_ONLY_KEY) -> Any:
    """The JSON of a GET that must answer 200."""
    answer = client.get(path, headers=bearer(key))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return answer.get_json()

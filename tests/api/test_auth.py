"""Bearer API keys: 401 with a challenge, 403 for a missing scope, constant-time comparison."""

from __future__ import annotations

import hmac
import logging

import pytest
from flask.testing import FlaskClient

from bridge.api import auth, create_app
from bridge.config.settings import Settings
from tests.api.conftest import (
    READ_ONLY_KEY,
    SEND_AND_READ_KEY,
    SEND_ONLY_KEY,
    MakeSettings,
    bearer,
)

MESSAGE = {"to": "sip:alice@contoso.com", "text": "hi"}


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", f"Basic {SEND_AND_READ_KEY}", "Bearer wrong-key-0123456789",
     f"Bearer {SEND_AND_READ_KEY}x", f"{SEND_AND_READ_KEY}"],
)  # fmt: skip
def test_missing_or_wrong_key_is_401_with_challenge(
    client: FlaskClient, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}

    for response in (
        client.post("/messages", json=MESSAGE, headers=headers),
        client.get("/messages/msg_" + "0" * 32, headers=headers),
    ):
        assert response.status_code == 401
        assert response.mimetype == "application/problem+json"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert response.get_json()["type"] == "urn:ucwa-bridge:problem:unauthorized"
        assert SEND_AND_READ_KEY not in response.get_data(as_text=True)


def test_scopes(client: FlaskClient) -> None:
    sent = client.post("/messages", json=MESSAGE, headers=bearer(SEND_ONLY_KEY))
    assert sent.status_code == 202
    location = sent.headers["Location"]

    denied_read = client.get(location, headers=bearer(SEND_ONLY_KEY))
    assert denied_read.status_code == 403
    assert denied_read.get_json()["type"] == "urn:ucwa-bridge:problem:forbidden"
    assert SEND_ONLY_KEY not in denied_read.get_data(as_text=True)

    assert client.get(location, headers=bearer(READ_ONLY_KEY)).status_code == 200
    denied_send = client.post("/messages", json=MESSAGE, headers=bearer(READ_ONLY_KEY))
    assert denied_send.status_code == 403
    assert client.get(location, headers=bearer(SEND_AND_READ_KEY)).status_code == 200


def test_bearer_scheme_is_case_insensitive(client: FlaskClient) -> None:
    headers = {"Authorization": f"bearer {SEND_AND_READ_KEY}"}
    assert client.post("/messages", json=MESSAGE, headers=headers).status_code == 202


def test_probes_and_openapi_need_no_key(client: FlaskClient) -> None:
    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert client.get(path).status_code == 200


@pytest.mark.parametrize("presented", [SEND_AND_READ_KEY, "short", "x" * 500])
def test_every_configured_key_is_compared_on_equal_length_digests(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch, presented: str
) -> None:
    calls: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)

    client.get("/messages/msg_" + "0" * 32, headers=bearer(presented))

    # The matching key is configured first: no early exit means all three are still compared.
    assert calls == [(32, 32)] * 3


def test_auth_can_be_disabled_explicitly(make_settings: MakeSettings, redis_client: object) -> None:
    settings = make_settings(auth_disabled="true", api_keys="")
    client = create_app(settings, redis_client).test_client()  # type: ignore[arg-type]

    assert client.post("/messages", json=MESSAGE).status_code == 202


def test_keys_are_not_logged(client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    client.post("/messages", json=MESSAGE, headers=bearer())
    client.post("/messages", json=MESSAGE, headers=bearer("wrong-key-0123456789"))

    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert SEND_AND_READ_KEY not in logged
    assert "wrong-key-0123456789" not in logged


def test_settings_repr_hides_keys(settings: Settings) -> None:
    assert SEND_AND_READ_KEY not in repr(settings)
    assert SEND_AND_READ_KEY not in repr(settings.api_keys)
